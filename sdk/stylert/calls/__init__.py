"""The calls on whole photos, one module each: retouch, restore, stylize, and the bare generator."""
