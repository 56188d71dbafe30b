from nsjax.cli._common import use_classic_cpu_codegen

use_classic_cpu_codegen()  # what `nsjax` commands run with; before benchmarks.run imports JAX

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":  # grain's worker processes (spawn) import this module again
    raise SystemExit(main())
