/// Safetensors files, dtype conversion, the delta-blob codec and zstd: bytes in, bytes out.
