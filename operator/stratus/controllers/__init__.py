"""kopf handlers, one module per kind. Thin: parse the body into the model, call core/ and drivers/."""
