"""The leaf layer every other one stands on: user errors, atomic writes, the artifact
manifest (written, read, checked), this machine's CPU and the execution-precision table."""
