{
  "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {
    "publicKey": {
      "hint": "2fe2ac57132c16f27c6d5f4ef7d2e265e4931f42193c6597803b9c9e31ebc45c"
    },
    "tlogEntries": []
  },
  "dsseEnvelope": {
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJuYW1lIjoibW9kZWwiLCJkaWdlc3QiOnsic2hhMjU2IjoiZTBkOGFkZDNjZDU0Mzk5NzQ4ZWU3ZmVlNmRkZDU1OGMwOWYwNjUzZjgzZjFhZjg0YjNlOWI0ODQyZTc2NWIwZSJ9fV0sInByZWRpY2F0ZVR5cGUiOiJodHRwczovL21vZGVsX3NpZ25pbmcvc2lnbmF0dXJlL3YxLjAiLCJwcmVkaWNhdGUiOnsic2VyaWFsaXphdGlvbiI6eyJtZXRob2QiOiJmaWxlcyIsImhhc2hfdHlwZSI6InNoYTI1NiIsImFsbG93X3N5bWxpbmtzIjpmYWxzZSwiaWdub3JlX3BhdGhzIjpbIi5naXQiLCIuZ2l0YXR0cmlidXRlcyIsIi5naXRodWIiLCIuZ2l0aWdub3JlIiwibW9kZWwuc2lnIl19LCJyZXNvdXJjZXMiOlt7Im5hbWUiOiJjb25maWcuanNvbiIsImFsZ29yaXRobSI6InNoYTI1NiIsImRpZ2VzdCI6ImJlNGNiZTRiNDkzMzZiNDNhND