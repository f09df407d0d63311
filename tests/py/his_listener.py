#!/usr/bin/env python3
"""A township HIS stand-in that receives HL7 v2 over MLLP and parses it with the
third-party `hl7` package, as a real HIS interface engine would.

    his_listener.py PORT OUTFILE

Prints "listening" when ready. For every framed message: parses it with `hl7.parse`,
appends one JSON line to OUTFILE (message type, control id, patient id, OBX values or the
parse error) and answers an original-mode ACK (AA when it parsed, AE otherwise).
"""
import asyncio
import json
import sys

import hl7

START, END = b"\x0b", b"\x1c\r"


def describe(text):
    msg = hl7.parse(text)
    msh = msg.segment("MSH")
    obx = [
        {"code": str(s[3][0][0]), "value": str(s[5]), "status": str(s[11])}
        for s in msg
        if str(s[0]) == "OBX"
    ]
    return {
        "ok": True,
        "type": str(msh[9]),
        "control_id": str(msh[10]),
        "patient_id": str(msg.segment("PID")[3][0][0]),
        "obx": obx,
        "obr_status": str(msg.segment("OBR")[25]),
    }, str(msh[10])


async def handle(reader, writer, out):
    buf = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        buf += data
        while START in buf and END in buf:
            start = buf.index(START)
            end = buf.index(END, start)
            frame, buf = buf[start + 1:end], buf[end + 2:]
            text = frame.decode("utf-8", errors="replace")
            try:
                record, control = describe(text)
                code = "AA"
            except Exception as e:  # the point is to record what the package refused
                record, control, code = {"ok": False, "error": repr(e)}, "", "AE"
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            ack = f"MSH|^~\\&|HIS|TOWNSHIP|||20260101000000||ACK|A{control}|P|2.5.1\rMSA|{code}|{control}\r"
            writer.write(START + ack.encode() + END)
            await writer.drain()
    writer.close()


async def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    server = await asyncio.start_server(lambda r, w: handle(r, w, out), "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
