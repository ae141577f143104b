"""`python -m ddbench ...` (and `torchrun --nproc_per_node N -m ddbench run ...`): the same CLI
as the `ddbench` entry point."""

from ddbench.cli import main

if __name__ == "__main__":
    main(prog_name="ddbench")
