"""Keyloom's own OpenAPI 3.1 document (served at GET /openapi.json): the routes it serves, what they
accept and every error they may answer, in the OpenAI shapes. Tests fuzz the API against it."""
from __future__ import annotations

from typing import Any

from . import __version__

_ERROR = {"$ref": "#/components/responses/Error"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _ERROR for s in statuses}


CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "image_url", "input_audio", "file", "refusal"]},
        "text": {"type": "string"},
        "image_url": {"type": "object", "properties": {"url": {"type": "string"}, "detail": {"type": "string"}}},
        "input_audio": {"type": "object", "properties": {"data": {"type": "string"}, "format": {"type": "string"}}},
        "file": {"type": "object", "properties": {"file_data": {"type": "string"}, "filename": {"type": "string"}}},
        "refusal": {"type": "string"},
    },
}

MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": CONTENT_PART}, {"type": "null"}]},
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {
            "type": "object", "required": ["id", "type", "function"],
            "properties": {"id": {"type": "string"}, "type": {"type": "string", "enum": ["function"]},
                           "function": {"type": "object", "required": ["name", "arguments"],
                                        "properties": {"name": {"type": "string"},
                                                       "arguments": {"type": "string"}}}}}},
    },
}

CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "description": "OpenAI's CreateChatCompletionRequest; fields Gemini has no use for are accepted and ignored.",
    "properties": {
        "model": {"type": "string", "pattern": "^(models/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "top_k": {"type": ["integer", "null"], "minimum": 1},
        "max_tokens": {"type": ["integer", "null"], "minimum": 1},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 8},
        "seed": {"type": ["integer", "null"]},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "reasoning_effort": {"type": ["string", "null"],
                             "enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max", None]},
        "response_format": {"type": ["object", "null"]},
        "tools": {"type": ["array", "null"], "items": {"type": "object"}},
        "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "null"}]},
        "logit_bias": {"type": ["object", "null"]},
    },
}

USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                   "total_tokens": {"type": "integer"}},
}

CHAT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["index", "message", "finish_reason", "logprobs"],
            "properties": {
                "index": {"type": "integer"},
                "finish_reason": {"type": "string",
                                  "enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]},
                "logprobs": {"type": "null"},
                "message": {"type": "object", "required": ["role", "content", "refusal"], "properties": {
                    "role": {"type": "string", "const": "assistant"},
                    "content": {"type": ["string", "null"]},
                    "refusal": {"type": ["string", "null"]},
                    "reasoning_content": {"type": "string"},
                    "tool_calls": {"type": "array"},
                }},
            }}},
        "usage": USAGE,
    },
}

EMBEDDING_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "dimensions": {"type": "integer", "minimum": 1},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "user": {"type": "string"},
    },
}

EMBEDDING_RESPONSE = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"type": "string", "const": "list"},
        "model": {"type": "string"},
        "data": {"type": "array", "items": {
            "type": "object", "required": ["object", "index", "embedding"],
            "properties": {"object": {"type": "string", "const": "embedding"}, "index": {"type": "integer"},
                           "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}},
                                                   {"type": "string"}]}}}},
        "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                  "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}},
    },
}

CONVERSATION_WRITE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"}, "model": {"type": ["string", "null"]},
        "params": {"type": "object", "properties": {
            "temperature": {"type": "number"}, "top_p": {"type": "number"}, "top_k": {"type": "integer"},
            "presence_penalty": {"type": "number"}, "frequency_penalty": {"type": "number"},
            "max_tokens": {"type": "integer"}, "reasoning_effort": {"type": "string"}, "stream": {"type": "boolean"},
            "system": {"type": "string"}}},
        "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant"]}, "content": {"type": "string"},
            "images": {"type": "array", "items": {"type": "string"}}, "reasoning": {"type": "string"},
            "error": {"type": "string"}, "model": {"type": "string"},
            "usage": {"type": "object", "additionalProperties": {"type": "integer"}}}}},
    },
}
CONVERSATION = {"allOf": [CONVERSATION_WRITE, {"type": "object", "required": ["id", "title", "messages"],
                                               "properties": {"id": {"type": "string"},
                                                              "created_at": {"type": "number"},
                                                              "updated_at": {"type": "number"}}}]}
_CID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}]


_ANTHROPIC_ERROR = {"description": "An error, in Anthropic's shape", "content": {"application/json": {"schema": {
    "type": "object", "required": ["type", "error"], "properties": {
        "type": {"const": "error"}, "error": {"type": "object", "required": ["type", "message"], "properties": {
            "type": {"type": "string"}, "message": {"type": "string"}}}}}}}}


def _anthropic_errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _ANTHROPIC_ERROR for s in statuses}


_RESPONSES_BODY = {"type": "object", "required": ["model"], "properties": {
    "model": {"type": "string"},
    "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    "instructions": {"type": "string"}, "stream": {"type": "boolean"}, "store": {"type": "boolean"},
    "previous_response_id": {"type": "string"}, "tools": {"type": "array", "items": {"type": "object"}},
    "max_output_tokens": {"type": "integer", "minimum": 1}}}
_MESSAGES_BODY = {"type": "object", "required": ["model", "messages"], "properties": {
    "model": {"type": "string"}, "max_tokens": {"type": "integer", "minimum": 1},
    "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"type": "string", "enum": ["user", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}}}},
    "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    "stream": {"type": "boolean"}, "tools": {"type": "array", "items": {"type": "object"}}}}
_RID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {"id": {"type": "string"}, "object": {"type": "string", "const": "model"},
                   "created": {"type": "integer"}, "owned_by": {"type": "string"}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Keyloom", "version": __version__,
                 "description": "An OpenAI-compatible endpoint in front of a pool of Gemini keys. Authenticate with "
                                "the server's PASSWORD as a Bearer token (or x-goog-api-key, or ?key=)."},
        "security": [{"bearer": []}, {"googApiKey": []}, {"queryKey": []}],
        "paths": {
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion",
                "summary": "Chat completion, whole or streamed (server-sent events)",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                                     "ChatRequest"}}}},
                "responses": {
                    "200": {"description": "The answer: JSON, or an event stream when stream is true",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                                 "ChatCompletion"}},
                                        "text/event-stream": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504)}}},
            "/v1/responses": {"post": {
                "operationId": "createResponse",
                "summary": "OpenAI Responses API (Codex CLI, the Agents SDK): a response, whole or streamed",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _RESPONSES_BODY}}},
                "responses": {
                    "200": {"description": "The Response object, or its typed event stream when stream is true",
                            "content": {"application/json": {"schema": {"type": "object"}},
                                        "text/event-stream": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504)}}},
            "/v1/responses/{id}": {
                "parameters": _RID,
                "get": {"operationId": "getResponse", "summary": "A stored response (store was not false)",
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                            "type": "object"}}}}, **_errors(401, 404)}},
                "delete": {"operationId": "deleteResponse",
                           "responses": {"200": {"description": "Deleted", "content": {"application/json": {
                               "schema": {"type": "object"}}}}, **_errors(401, 404)}}},
            "/v1/messages": {"post": {
                "operationId": "createMessage",
                "summary": "Anthropic Messages API (Claude Code): a message, whole or streamed; x-api-key works too",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _MESSAGES_BODY}}},
                "responses": {
                    "200": {"description": "The message, or its event stream when stream is true",
                            "content": {"application/json": {"schema": {"type": "object"}},
                                        "text/event-stream": {"schema": {"type": "string"}}}},
                    **_anthropic_errors(400, 401, 403, 404, 413, 429, 500, 504, 529)}}},
            "/v1/messages/count_tokens": {"post": {
                "operationId": "countMessageTokens", "summary": "Tokens a message request would take (free)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _MESSAGES_BODY}}},
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["input_tokens"]}}}},
                    **_anthropic_errors(400, 401, 403, 404, 413, 429, 500, 504, 529)}}},
            "/v1/images/generations": {"post": {
                "operationId": "createImage",
                "summary": "Images from a prompt: Gemini image models (one call per image) or Imagen (:predict)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["model", "prompt"], "properties": {
                        "model": {"type": "string"}, "prompt": {"type": "string"},
                        "n": {"type": "integer", "minimum": 1, "maximum": 4}, "size": {"type": "string"},
                        "quality": {"type": "string"},
                        "response_format": {"type": "string", "enum": ["b64_json", "url"]}}}}}},
                "responses": {"200": {"description": "ImagesResponse (url answers hold data: URLs)", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["created", "data"]}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504)}}},
            "/v1/audio/speech": {"post": {
                "operationId": "createSpeech", "summary": "Speech from text with a Gemini TTS model: wav or pcm",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["model", "input", "voice"], "properties": {
                        "model": {"type": "string"}, "input": {"type": "string"}, "voice": {"type": "string"},
                        "response_format": {"type": "string", "enum": ["wav", "pcm"]},
                        "instructions": {"type": "string"}}}}}},
                "responses": {"200": {"description": "The audio", "content": {
                    "audio/wav": {"schema": {"type": "string"}}, "audio/pcm": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504)}}},
            "/v1/embeddings": {"post": {
                "operationId": "createEmbedding",
                "summary": "Embeddings of one text or a list of texts (Gemini embedding models)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/EmbeddingRequest"}}}},
                "responses": {"200": {"description": "The vectors, in input order", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingResponse"}}}},
                    **_errors(400, 401, 404, 413, 429, 502, 503, 504)}}},
            "/v1/models": {"get": {
                "operationId": "listModels", "summary": "The chat models (type=embedding: embedding models; all: both)",
                "parameters": [{"name": "type", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["chat", "embedding", "all"]}}],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["object", "data"],
                    "properties": {"object": {"type": "string", "const": "list"},
                                   "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}}}}},
                    **_errors(400, 401)}}},
            "/v1/models/{model}": {"get": {
                "operationId": "retrieveModel",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Model"}}}}, **_errors(401, 404)}}},
            "/api/conversations": {
                "get": {"operationId": "listConversations", "summary": "Saved chat-playground conversations "
                        "(newest first); q searches titles and messages",
                        "parameters": [{"name": "q", "in": "query", "required": False, "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["conversations"],
                            "properties": {"conversations": {"type": "array"}}}}}}, **_errors(401)}},
                "post": {"operationId": "createConversation",
                         "requestBody": {"required": True, "content": _json("ConversationWrite")},
                         "responses": {"201": {"description": "Created", "content": _json("Conversation")},
                                       **_errors(400, 401, 409, 413, 429, 507)}}},
            "/api/conversations/import": {"post": {
                "operationId": "importConversation", "summary": "A JSON export, as a new conversation",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"201": {"description": "Created", "content": _json("Conversation")},
                              **_errors(400, 401, 409, 413, 429, 507)}}},
            "/api/conversations/{id}": {
                "parameters": _CID,
                "get": {"operationId": "getConversation",
                        "responses": {"200": {"description": "OK", "content": _json("Conversation")},
                                      **_errors(401, 404)}},
                "put": {"operationId": "updateConversation", "summary": "Change any of title, model, params, "
                        "messages", "requestBody": {"required": True, "content": _json("ConversationWrite")},
                        "responses": {"200": {"description": "OK", "content": _json("Conversation")},
                                      **_errors(400, 401, 404, 413, 429, 507)}},
                "delete": {"operationId": "deleteConversation",
                           "responses": {"200": {"description": "Deleted", "content": {"application/json": {
                               "schema": {"type": "object"}}}}, **_errors(401, 404)}}},
            "/api/conversations/{id}/export": {"get": {
                "operationId": "exportConversation", "parameters": [*_CID, {
                    "name": "format", "in": "query", "required": False,
                    "schema": {"type": "string", "enum": ["json", "md"]}}],
                "responses": {"200": {"description": "The conversation as JSON (importable) or Markdown",
                                      "content": {"application/json": {"schema": {"type": "object"}},
                                                  "text/markdown": {"schema": {"type": "string"}}}},
                              **_errors(400, 401, 404)}}},
            "/api/render": {"post": {
                "operationId": "renderMarkdown", "summary": "Markdown to sanitized HTML (as the playground shows it)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["markdown"], "properties": {"markdown": {
                        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}}}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["html"]}}}}, **_errors(400, 401, 413, 429, 503)}}},
            "/health": {"get": {
                "operationId": "health", "summary": "Liveness and counts; no authentication, no secrets",
                "security": [],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}}}}}}},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "googApiKey": {"type": "apiKey", "in": "header", "name": "x-goog-api-key"},
                "queryKey": {"type": "apiKey", "in": "query", "name": "key"},
            },
            "responses": {"Error": {"description": "An error, in OpenAI's ErrorResponse shape",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/ErrorResponse"}}}}},
            "schemas": {
                "ChatRequest": CHAT_REQUEST,
                "ChatCompletion": CHAT_COMPLETION,
                "Model": MODEL,
                "EmbeddingRequest": EMBEDDING_REQUEST,
                "ConversationWrite": CONVERSATION_WRITE,
                "Conversation": CONVERSATION,
                "EmbeddingResponse": EMBEDDING_RESPONSE,
                "ErrorResponse": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["message", "type", "param", "code"],
                    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
            },
        },
    }
