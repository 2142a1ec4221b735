# Keyloom on a HuggingFace Space (Docker SDK) or any container host.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=7860 \
    HOST=0.0.0.0

# HuggingFace Spaces run the container as uid 1000.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin keyloom

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown=1000:1000 run.py ./
COPY --chown=1000:1000 server/ server/
COPY --chown=1000:1000 conf/ conf/
COPY --chown=1000:1000 migrations/ migrations/
# ./data is used when the Space has no persistent storage; with it, Keyloom uses /data.
RUN mkdir -p /app/data && chown 1000:1000 /app/data

USER 1000
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD python -c "import urllib.request,os; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT','7860'), timeout=4)"
CMD ["python", "run.py"]
