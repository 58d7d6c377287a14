#!/usr/bin/env python3
"""A slow OpenAI-style streaming upstream for the scale benchmark: every POST gets a chat completion
stream of COUNT events, one every INTERVAL seconds (chunked transfer encoding, one chunk per event), then
the usage chunk and [DONE]. Holds as many connections open as the load asks for.

usage: slow_upstream.py PORT [INTERVAL=1.0] [COUNT=30]
"""
import asyncio
import sys

PORT = int(sys.argv[1])
INTERVAL = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
COUNT = int(sys.argv[3]) if len(sys.argv) > 3 else 30

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
EVENT = (b'data: {"id":"chatcmpl-slow","object":"chat.completion.chunk","created":1715000000,'
         b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}\n\n')
LAST = (b'data: {"id":"chatcmpl-slow","object":"chat.completion.chunk","created":1715000000,'
        b'"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":%d,'
        b'"total_tokens":%d}}\n\ndata: [DONE]\n\n' % (COUNT, 19 + COUNT))


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(HEAD)
            for _ in range(COUNT):
                writer.write(chunk(EVENT))
                await writer.drain()
                await asyncio.sleep(INTERVAL)
            writer.write(chunk(LAST) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, backlog=16384)
    async with server:
        await server.serve_forever()


asyncio.run(main())
