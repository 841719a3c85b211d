# One image for every actor; compose.yaml picks the actor with `xdsi serve ACTOR`.
FROM python:3.13-slim
RUN apt-get update && apt-get install -y --no-install-recommends dcmtk dicom3tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY affinity_domain affinity_domain
COPY registry registry
COPY repository repository
COPY pix_manager pix_manager
COPY imaging_source imaging_source
COPY consumer consumer
COPY audit_repository audit_repository
COPY demo demo
RUN pip install --no-cache-dir .
WORKDIR /data
ENV XDSI_DATA_DIR=/data
ENTRYPOINT ["xdsi"]
