{
  "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {
    "publicKey": {
      "hint": "2fe2ac57132c16f27c6d5f4ef7d2e265e4931f42193c6597803b9c9e31ebc45c"
    },
    "tlogEntries": []
  },
  "dsseEnvelope": {
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJuYW1lIjoibW9kZWwiLCJkaWdlc3QiOnsic2hhMjU2IjoiZTBkOGFkZDNjZDU0Mzk5NzQ4ZWU3ZmVlNmRkZDU1OGMwOWYwNjUzZjgzZjFhZjg0YjNlOWI0ODQyZTc2NWIwZSJ9fV0sInByZWRpY2F0ZVR5cGUiOiJodHRwczovL21vZGVsX3NpZ25pbmcvc2lnbmF0dXJlL3YxLjAiLCJwcmVkaWNhdGUiOnsic2VyaWFsaXphdGlvbiI6eyJtZXRob2QiOiJmaWxlcyIsImhhc2hfdHlwZSI6ImJsYWtlMmIiLCJhbGxvd19zeW1saW5rcyI6ZmFsc2UsImlnbm9yZV9wYXRocyI6WyIuZ2l0IiwiLmdpdGF0dHJpYnV0ZXMiLCIuZ2l0aHViIiwiLmdpdGlnbm9yZSIsIm1vZGVsLnNpZyJdfSwicmVzb3VyY2VzIjpbeyJuYW1lIjoiY29uZmlnLmpzb24iLCJhbGdvcml0aG0iOiJibGFrZTJiIiwiZGlnZXN0IjoiYmU0Y2JlNGI0OTMzNmI0M2E0MGRmNjQzYWVjODU2ZjIxOTAwYjdlNWVkOWM5YTFjMzM5OTRmY2ZkYjdhMGQ5ZSJ9LHsibmFtZSI6Im1vZGVsLnNhZmV0ZW5zb3JzIiwiYWxnb3JpdGhtIjoiYmxha2UyYiIsImRpZ2VzdCI6IjNhZWU1ZTExMzRkMTY5MWRiNTFkODE4MmUyZGM2OTY1OGQyNzI1OWExZjA1ZWRjMTBmYjUwMGEwNzllMWU4YzAifV0sInRlbnNvcmZpbGUiOnsidmVyc2lvbiI6MSwiYWxnb3JpdGhtIjoiYmxha2UzIiwiZmlsZXMiOnsibW9kZWwuc2FmZXRlbnNvcnMiOnsiaGVhZGVyIjoiOTI2NzNhYWE2Mjc3NzVmNGNhNDcwNzg0MDUxN2UzZjgzMjMyMDgzMDA2NmRkNzI1ZWYzYjg1MjkyYmYxYTg3OSIsInRlbnNvcnMiOnsiYSI6IjI3ZDI5ZjM3Y2MyMzcwNTY5ZDQxZDdiNzNjNTFiMThkYzQyZGE5ZjZkZjE5NmYwNTZkYWEwMmViYjkzMTExYjYiLCJiIjoiMDRmZTNhNDY0NDdmZTdmODA5N2Q2MjM1NmIwMzZiOWU5NTkyZTcwNDkzZTE2ODIwZDdjOTNlZTU0MzhiMDllNSJ9fX19fX0=",
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [
      {
        "sig": "MEQCICAuHXQsQdmciWzfyWhATrls0GREQOACJpQJM4QYcAVwAiBcRMON9/D1/w3W7ohNcTGaJZ/Gpkei6ZzVfZZ87jpN3g==",
        "keyid": ""
      }
    ]
  }
}
