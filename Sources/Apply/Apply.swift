/// Row-major matrix algebra on OpenBLAS/LAPACK: materializing, factorizing and solving edits.
