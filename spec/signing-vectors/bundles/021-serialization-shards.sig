{
  "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {
    "publicKey": {
      "hint": "2fe2ac57132c16f27c6d5f4ef7d2e265e4931f42193c6597803b9c9e31ebc45c"
    },
    "tlogEntries": []
  },
  "dsseEnvelope": {
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJuYW1lIjoibW9kZWwiLCJkaWdlc3QiOnsic2hhMjU2IjoiZTBkOGFkZDNjZDU0Mzk5NzQ4ZWU3ZmVlNmRkZDU1OGMwOWYwNjUzZjgzZjFhZjg0YjNlOWI0ODQyZTc2NWIwZSJ9fV0sInByZWRpY2F0ZVR5cGUiOiJodHRwczovL21vZGVsX3NpZ25pbmcvc2lnbmF0dXJlL3YxLjAiLCJwcmVkaWNhdGUiOnsic2VyaWFsaXphdGlvbiI6eyJtZXRob2QiOiJzaGFyZHMiLCJoYXNoX3R5cGUiOiJzaGEyNTYiLCJhbGxvd19zeW1saW5rcyI6ZmFsc2UsImlnbm9yZV9wYXRocyI6WyIuZ2l0IiwiLmdpdGF0dHJpYnV0ZXMiLCIuZ2l0aHViIiwiLmdpdGlnbm9yZSIsIm1vZGVsLnNpZyJdfSwicmVzb3VyY2VzIjpbeyJuYW1lIjoiY29uZmlnLmpzb24iLCJhbGdvcml0aG0iOiJzaGEyNTYiLCJkaWdlc3QiOiJiZTRjYmU0YjQ5MzM2YjQzYTQwZGY2NDNhZWM4NTZmMjE5MDBiN2U1ZWQ5YzlhMWMzMzk5NGZjZmRiN2EwZDllIn0seyJuYW1lIjoibW9kZWwuc2FmZXRlbnNvcnMiLCJhbGdvcml0aG0iOiJzaGEyNTYiLCJkaWdlc3QiOiIzYWVlNWUxMTM0ZDE2OTFkYjUxZDgxODJlMmRjNjk2NThkMjcyNTlhMWYwNWVkYzEwZmI1MDBhMDc5ZTFlOGMwIn1dLCJ0ZW5zb3JmaWxlIjp7InZlcnNpb24iOjEsImFsZ29yaXRobSI6ImJsYWtlMyIsImZpbGVzIjp7Im1vZGVsLnNhZmV0ZW5zb3JzIjp7ImhlYWRlciI6IjkyNjczYWFhNjI3Nzc1ZjRjYTQ3MDc4NDA1MTdlM2Y4MzIzMjA4MzAwNjZkZDcyNWVmM2I4NTI5MmJmMWE4NzkiLCJ0ZW5zb3JzIjp7ImEiOiIyN2QyOWYzN2NjMjM3MDU2OWQ0MWQ3YjczYzUxYjE4ZGM0MmRhOWY2ZGYxOTZmMDU2ZGFhMDJlYmI5MzExMWI2IiwiYiI6IjA0ZmUzYTQ2NDQ3ZmU3ZjgwOTdkNjIzNTZiMDM2YjllOTU5MmU3MDQ5M2UxNjgyMGQ3YzkzZWU1NDM4YjA5ZTUifX19fX19",
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [
      {
        "sig": "MEQCIFYxy6XoSOtaOmmel4i+/s0SBN1DGTPkzEyGxvhMgAcpAiBoXco1Eibq9dznBGn2XoKYDy2GoP8L5ubti4TwIIE0JA==",
        "keyid": ""
      }
    ]
  }
}
