print("mvc-demo-editor: being written")
