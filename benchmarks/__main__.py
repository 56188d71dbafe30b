if __name__ == "__main__":  # grain's worker processes (spawn) import this module again
    import sys

    from nsjax import _malloc

    _malloc.reexec(["-m", "benchmarks", *sys.argv[1:]])  # before JAX starts: see nsjax._malloc
    from benchmarks.run import main

    raise SystemExit(main())
