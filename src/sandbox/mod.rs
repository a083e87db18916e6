//! A simulated Kubernetes API server, faithful enough that the real `kubectl` works against it.
