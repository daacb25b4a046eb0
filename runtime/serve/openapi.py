"""The OpenAPI 3.1 document of `clipedge serve` (GET /openapi.json) and its plain docs page (GET /docs).

Written by hand rather than generated from docstrings: the routes take multipart uploads, raw image bodies and JSON,
which a generator cannot infer, and the document carries the server's live limits and model. The docs page is plain
HTML with no script or stylesheet from a CDN: the server must work offline, and a page that pulled Swagger UI from
the internet would leak every visit.
"""

from __future__ import annotations

import html
from typing import Any

import clipedge

__all__ = ["openapi_document", "docs_page", "ENDPOINTS"]

# (method, path, summary): the docs page's table and the document's order
ENDPOINTS = (
    ("GET", "/health", "status, the loaded model, the index size and the limits"),
    ("GET", "/ping", "'pong' (immich's health check)"),
    ("POST", "/embed/text", 'JSON {"texts": [...]} -> {"embeddings": [[...]], "dim"}'),
    ("POST", "/embed/image", "an image (multipart field 'image', or the raw body as image/*) -> {\"embedding\"}"),
    ("POST", "/classify", "an image and labels (+ template, top) -> labels ranked by probability"),
    ("POST", "/search", 'JSON {"text", "k"} or an image (+ k) -> {"hits": [{"rank", "item", "score"}]}'),
    ("GET", "/openapi.json", "this API as OpenAPI 3.1"),
    ("GET", "/docs", "this page"),
)

_ERROR = {"description": "refused: {\"error\": \"...\"}",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": required, "properties": properties}}}}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "ok", "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _ERROR for code in codes}


def _with_fields(body: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The image body with more multipart fields (labels, k)."""
    multipart = body["content"]["multipart/form-data"]["schema"]
    extended = {**multipart, "properties": {**multipart["properties"], **fields}}
    return {**body, "content": {**body["content"], "multipart/form-data": {"schema": extended}}}


def openapi_document(service: Any) -> dict[str, Any]:
    """The document for this server: its limits in the descriptions, /search marked unavailable without an index."""
    limits = service.limits
    vector = {"type": "array", "items": {"type": "number"}}
    model = {"$ref": "#/components/schemas/Model"}
    labels_field = {"labels": {"type": "array", "items": {"type": "string"}, "maxItems": limits.max_labels,
                               "description": "repeat the field, or give one comma-separated value"},
                    "template": {"type": "string", "description": "prompt template, {} is the label"},
                    "top": {"type": "integer", "minimum": 1}}
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": ENDPOINTS[0][2], "responses": {"200": _ok({"type": "object"})}}},
        "/ping": {"get": {"summary": ENDPOINTS[1][2], "responses": {"200": {"description": "pong"}}}},
        "/embed/text": {"post": {
            "summary": ENDPOINTS[2][2],
            "requestBody": _json_body({"texts": {"type": "array", "maxItems": limits.max_texts, "items": {
                "type": "string", "maxLength": limits.max_text_chars}}}, ["texts"]),
            "responses": {"200": _ok({"type": "object", "properties": {
                "embeddings": {"type": "array", "items": vector}, "dim": {"type": "integer"}, "model": model}}),
                **_errors(400, 413, 415)}}},
        "/embed/image": {"post": {
            "summary": ENDPOINTS[3][2], "requestBody": _IMAGE_BODY,
            "responses": {"200": _ok({"type": "object", "properties": {"embedding": vector, "dim": {
                "type": "integer"}, "model": model}}), **_errors(400, 413, 415, 422)}}},
        "/classify": {"post": {
            "summary": ENDPOINTS[4][2], "requestBody": _with_fields(_IMAGE_BODY, labels_field),
            "parameters": [{"name": name, "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "for a raw image body"} for name in ("labels", "template", "top")],
            "responses": {"200": _ok({"type": "object", "properties": {"labels": {"type": "array", "items": {
                "type": "object", "properties": {"label": {"type": "string"}, "probability": {"type": "number"}}}},
                "model": model}}), **_errors(400, 413, 415, 422)}}},
        "/search": {"post": {
            "summary": ENDPOINTS[5][2],
            "requestBody": {"required": True, "content": {
                "application/json": _json_body({"text": {"type": "string", "maxLength": limits.max_text_chars},
                                                "k": {"type": "integer", "maximum": limits.max_k}},
                                               ["text"])["content"]["application/json"],
                **_with_fields(_IMAGE_BODY, {"k": {"type": "integer", "maximum": limits.max_k}})["content"]}},
            "responses": {"200": _ok({"type": "object", "properties": {"hits": {"type": "array", "items": {
                "type": "object", "properties": {"rank": {"type": "integer"}, "item": {"type": "string"},
                                                 "score": {"type": "number"}}}}, "model": model}}),
                **_errors(400, 413, 415, 422, 503)}}},
        "/openapi.json": {"get": {"summary": ENDPOINTS[6][2], "responses": {"200": _ok({"type": "object"})}}},
        "/docs": {"get": {"summary": ENDPOINTS[7][2], "responses": {"200": {"description": "HTML"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "clipedge serve", "version": clipedge.__version__,
                 "description": f"CLIP embeddings, zero-shot classification and index search on "
                                f"{service.model['format']} {service.model['precision']}; limits: "
                                f"{service.limits.to_dict()}" + ("" if service.index is not None else
                                                                 "; no index loaded: /search answers 503")},
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Model": {"type": "object", "properties": {key: {"type": "string"} for key in (
                "name", "sha256", "format", "precision")} | {"embed_dim": {"type": "integer"}}},
        }},
    }


def docs_page(service: Any) -> str:
    """A page listing the endpoints, the limits and curl examples; links the OpenAPI document."""
    rows = "\n".join(f"<tr><td>{method}</td><td><code>{html.escape(path)}</code></td><td>{html.escape(text)}</td>"
                     "</tr>" for method, path, text in ENDPOINTS)
    limits = "\n".join(f"<li><code>{name}</code>: {value}</li>" for name, value in service.limits.to_dict().items())
    examples = html.escape(
        "curl -s localhost:8000/embed/text -H 'Content-Type: application/json' -d '{\"texts\": [\"a red car\"]}'\n"
        "curl -s localhost:8000/embed/image -F image=@photo.jpg\n"
        "curl -s localhost:8000/classify -F image=@photo.jpg -F labels=cat,dog\n"
        "curl -s localhost:8000/search -H 'Content-Type: application/json' -d '{\"text\": \"a beach\", \"k\": 5}'")
    model = service.model
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipedge serve</title></head>
<body>
<h1>clipedge serve</h1>
<p>Model {html.escape(model['name'] or '?')} ({html.escape(model['format'])} {html.escape(model['precision'])},
{model['embed_dim']} dimensions); index: {'loaded' if service.index is not None else 'none (/search answers 503)'}.
The machine-readable description: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<table><tr><th>method</th><th>path</th><th>what</th></tr>
{rows}
</table>
<h2>Limits</h2><ul>{limits}</ul>
<h2>Examples</h2><pre>{examples}</pre>
<p>Errors are JSON <code>{{"error": "..."}}</code>: 400 bad input, 404 no such endpoint, 405 wrong method, 413 over a
limit, 415 wrong Content-Type, 422 not an image, 503 no index loaded.</p>
</body></html>
"""
