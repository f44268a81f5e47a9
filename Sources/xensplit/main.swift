print("xensplit: nothing yet")
