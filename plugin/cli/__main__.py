"""`python -m plugin.cli …`: how the demo, the benchmarks and the tests start a worker process."""

from plugin.cli import main

if __name__ == "__main__":
    main()
