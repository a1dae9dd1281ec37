{
  "mediaType": "application/vnd.dev.sigstore.bundle.v9+json",
  "verificationMaterial": {
    "publicKey": {
      "hint": "2fe2ac57132c16f27c6d5f4ef7d2e265e4931f42193c6597803b9c9e31ebc45c"
    },
    "tlogEntries": []
  },
  "dsseEnvelope": {
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJuYW1lIjoibW9kZWwiLCJkaWdlc3QiOnsic2hhMjU2IjoiZTBkOGFkZDNjZDU0Mzk5NzQ4ZWU3ZmVlNmRkZDU1OGMwOWYwNjUzZjgzZjFhZjg0YjNlOWI0ODQyZTc2NWIwZSJ9fV0sInByZWRpY2F0ZVR5cGUiOiJodHRwczovL21vZGVsX3NpZ25pbmcvc2lnbmF0dXJlL3YxLjAiLCJwcmVkaWNhdGUiOnsic2VyaWFsaXphdGlvbiI6eyJtZXRob2QiOiJmaWxlcyIsImhhc2hfdHlwZSI6InNoYTI1NiIsImFsbG93X3N5bWxpbmtzIjpmYWxzZSwiaWdub3JlX3BhdGhzIjpbIi5naXQiLCIuZ2l0YXR0cmlidXRlcyIsIi5naXRodWIiLCIuZ2l0aWdub3JlIiwibW9kZWwuc2lnIl19LCJyZXNvdXJjZXMiOlt7Im5hbWUiOiJjb25maWcuanNvbiIsImFsZ29yaXRobSI6InNoYTI1NiIsImRpZ2VzdCI6ImJlNGNiZTRiNDkzMzZiNDNhNDBkZjY0M2FlYzg1NmYyMTkwMGI3ZTVlZDljOWExYzMzOTk0ZmNmZGI3YTBkOWUifSx7Im5hbWUiOiJtb2RlbC5zYWZldGVuc29ycyIsImFsZ29yaXRobSI6InNoYTI1NiIsImRpZ2VzdCI6IjNhZWU1ZTExMzRkMTY5MWRiNTFkODE4MmUyZGM2OTY1OGQyNzI1OWExZjA1ZWRjMTBmYjUwMGEwNzllMWU4YzAifV0sInRlbnNvcmZpbGUiOnsidmVyc2lvbiI6MSwiYWxnb3JpdGhtIjoiYmxha2UzIiwiZmlsZXMiOnsibW9kZWwuc2FmZXRlbnNvcnMiOnsiaGVhZGVyIjoiOTI2NzNhYWE2Mjc3NzVmNGNhNDcwNzg0MDUxN2UzZjgzMjMyMDgzMDA2NmRkNzI1ZWYzYjg1MjkyYmYxYTg3OSIsInRlbnNvcnMiOnsiYSI6IjI3ZDI5ZjM3Y2MyMzcwNTY5ZDQxZDdiNzNjNTFiMThkYzQyZGE5ZjZkZjE5NmYwNTZkYWEwMmViYjkzMTExYjYiLCJiIjoiMDRmZTNhNDY0NDdmZTdmODA5N2Q2MjM1NmIwMzZiOWU5NTkyZTcwNDkzZTE2ODIwZDdjOTNlZTU0MzhiMDllNSJ9fX19fX0=",
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [
      {
        "sig": "MEQCIGkm5A/Q6ZWzCGghGe7awzozcG6dW1xmVh4O1sUEz5BXAiAlmcpHsbeGgTjthisbXYAVnw2EpOoobv99fwZ9iJfmRQ==",
        "keyid": ""
      }
    ]
  }
}
