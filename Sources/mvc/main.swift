print("mvc: under construction")
