# CI only (.ci/e2e): the local stand-in for debian:bookworm-slim. The rootfs comes from debootstrap (imported as
# local/debian:bookworm-minbase); this layer adds the CI machine's extra CA certificates (the build context holds
# them), so pip and apt inside `docker build` trust the TLS proxy. Users' machines pull the real image instead;
# the product Dockerfiles know nothing of this.
FROM local/debian:bookworm-minbase
COPY *.crt /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
