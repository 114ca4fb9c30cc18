"""The HTTP frontend: FastAPI app speaking the OpenAI audio API, Alibaba NLS REST and the seed /api."""
