"""Small shared helpers with no model code: atomic file writes, device meshes."""
