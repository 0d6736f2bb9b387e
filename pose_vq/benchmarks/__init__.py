"""The benchmark commands of ``python -m pose_vq.benchmark``, one module each (render,
model for step and encode, pipeline, conv), over a shared harness (timing, XLA's cost and
memory analyses, fresh processes per row, tables)."""
