"""Dashboard helpers shared by the pages: state keys, background jobs, cached loaders."""
