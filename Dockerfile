# syntax=docker/dockerfile:1
# Build stage: the veriflow wheel and the wheels of its dependencies, from the tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the wheel installed (not editable: no source tree in the image), run as a
# non-root user. The configuration ships inside the package (service/_config); override keys
# with a YAML file named by VERIFLOW_CONFIG and the VERIFLOW_* variables.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels veriflow \
    && useradd --system --no-create-home --shell /usr/sbin/nologin veriflow
USER veriflow
EXPOSE 8080
# Ready means the store answers. The worker has no HTTP server and the simulator listens on
# 8081: docker-compose.yml gives those services their own checks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
CMD ["veriflow", "serve", "--host", "0.0.0.0", "--port", "8080"]
