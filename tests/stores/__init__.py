"""Store-specific tests beyond the contract suite: locks, crashes, scale, URLs."""
