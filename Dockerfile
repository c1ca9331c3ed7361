# A first GPU image: TensorFlow's CUDA base image, Java for the COCO caption metrics, a C++
# compiler for the CPU kernels (captioning/kernels, used when no GPU is visible), and the
# project installed in editable mode. Build: docker build -t captioning .
# Run:   docker run --gpus all -v $PWD/workdirs:/workspace/captioning/workdirs captioning
FROM tensorflow/tensorflow:2.21.0-gpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless make g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/captioning
COPY setup.cfg pyproject.toml README.md ./
COPY captioning ./captioning
RUN python -m pip install --no-cache-dir -e '.[test]'
COPY . .

ENV TF_CPP_MIN_LOG_LEVEL=2
CMD ["python", "scripts/train.py", "--config=configs/shapes_sat.py", \
     "--workdir=workdirs/shapes_sat"]
