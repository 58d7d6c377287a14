"""Calls tollgate with the official OpenAI, Anthropic and google-genai SDKs, changing only the base URL
and adding X-Provider-Key, exactly as the README shows. Prints one JSON object: call name -> text received.

usage: clients.py BASE_URL SERVICE_KEY PROVIDER_KEY
"""
import json
import sys

import anthropic
import openai
from google import genai
from google.genai import types

base, service_key, provider_key = sys.argv[1:4]
out = {}

oa = openai.OpenAI(
    base_url=f"{base}/v1",
    api_key=service_key,
    default_headers={"X-Provider-Key": provider_key},
    max_retries=0,
)
messages = [{"role": "user", "content": "Say hello"}]
r = oa.chat.completions.create(model="gpt-4o-mini", messages=messages)
out["openai"] = r.choices[0].message.content
stream = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
out["openai_stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

an = anthropic.Anthropic(
    base_url=base,
    api_key=service_key,
    default_headers={"X-Provider-Key": provider_key},
    max_retries=0,
)
m = an.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
out["anthropic"] = "".join(b.text for b in m.content if b.type == "text")
with an.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=messages) as s:
    out["anthropic_stream"] = "".join(s.text_stream)

gm = genai.Client(
    api_key=service_key,
    http_options=types.HttpOptions(base_url=base, headers={"X-Provider-Key": provider_key}),
)
out["gemini"] = gm.models.generate_content(model="gemini-2.5-flash", contents="Say hello").text
out["gemini_stream"] = "".join(
    c.text or "" for c in gm.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hello")
)

print(json.dumps(out))
