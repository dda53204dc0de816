print("leaseholdd: not built yet")
