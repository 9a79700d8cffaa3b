"""normlab: the code behind normbook."""
