"""Style2paints V1 pipeline library: data, sketch extraction, models, training, metrics."""
