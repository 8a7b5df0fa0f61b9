# Worker image for docker-compose. Installs CPU torch from the PyTorch index when built on
# a host with internet; on the offline dev machines here the venv comes from infra/setup.sh.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends dataset-fashion-mnist && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY models models
COPY recommender recommender
COPY infra infra
COPY bench bench
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e .
ENV OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
CMD ["python", "-m", "streams", "worker", "-l", "info"]
