"""The client side of one submission: the Run, its futures, its end, the driver thread, the run registry."""
