from benchmarks.run import main

if __name__ == "__main__":  # grain's worker processes (spawn) import this module again
    raise SystemExit(main())
