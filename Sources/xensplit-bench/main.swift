print("xensplit-bench: nothing yet")
