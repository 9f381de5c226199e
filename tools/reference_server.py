"""A seed-style reference server for benchmarks/bench_serve.py: what the projects we replace do, on our model.

Flask development server, upload saved under the client's file name, Pillow resize, model.predict()
per request, an HTML answer. Not for use: it exists to be measured against.
"""
import os
import sys


def main(port, model_path, upload_dir):
    import keras
    import numpy as np
    from flask import Flask, request
    from PIL import Image

    import cifarlab.layers  # noqa: F401  (registers the custom layers)

    model = keras.models.load_model(model_path, compile=False)
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.post("/predict")
    def predict():
        upload = request.files["file"]
        path = os.path.join(upload_dir, upload.filename)
        upload.save(path)
        image = np.asarray(Image.open(path).convert("RGB").resize((32, 32)), dtype="float32")
        probs = model.predict(image[None], verbose=0)[0]
        top = int(np.argmax(probs))
        return f"<html><body><h1>class {top}</h1><p>{probs[top]:.3f}</p></body></html>"

    app.run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
