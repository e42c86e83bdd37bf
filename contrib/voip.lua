-- Wireshark dissector for voip's call control (docs/protocol.md, "Call control").
--
-- Control messages share the media port with RTP and RTCP and begin with the bytes "vC"
-- (outside every range RFC 7983 assigns), so a heuristic dissector on UDP finds them.
-- RTP and RTCP on the same port need "Decode As... RTP" (or rtp.heuristic_rtp).
--
--   wireshark -X lua_script:contrib/voip.lua capture.pcapng
--   tshark -X lua_script:contrib/voip.lua -r capture.pcapng -Y voip

local voip = Proto("voip", "voip call control")

local types = {
    [1] = "INVITE", [2] = "RINGING", [3] = "ACCEPT", [4] = "BUSY", [5] = "HANGUP",
    [6] = "HANGUP_ACK", [7] = "REVEAL", [8] = "REFUSED", [9] = "PATH_CHALLENGE", [10] = "PATH_RESPONSE",
}
local refusals = {
    [1] = "encryption required", [2] = "encryption unsupported", [3] = "code required",
    [4] = "code unexpected", [5] = "wrong code",
}
local AUTHENTICATED = 0x80
local TRAILER = 8 + 16  -- sequence number and truncated HMAC-SHA256 tag
local OFFER = 11        -- ssrc (4), payload type (1), frame ms (1), bitrate (4), flags (1)

local f = voip.fields
f.version = ProtoField.uint8("voip.version", "Version")
f.type = ProtoField.uint8("voip.type", "Type", base.DEC, types, 0x7f)
f.authenticated = ProtoField.bool("voip.authenticated", "Authenticated", 8, nil, AUTHENTICATED)
f.call_id = ProtoField.uint64("voip.call_id", "Call id", base.HEX)
f.ssrc = ProtoField.uint32("voip.offer.ssrc", "SSRC", base.HEX)
f.payload_type = ProtoField.uint8("voip.offer.payload_type", "Payload type")
f.frame_ms = ProtoField.uint8("voip.offer.frame_ms", "Frame (ms)")
f.bitrate = ProtoField.uint32("voip.offer.bitrate", "Bitrate (bit/s)")
f.flags = ProtoField.uint8("voip.offer.flags", "Flags", base.HEX)
f.fec = ProtoField.bool("voip.offer.fec", "FEC", 8, nil, 0x01)
f.dtx = ProtoField.bool("voip.offer.dtx", "DTX", 8, nil, 0x02)
f.encrypted = ProtoField.bool("voip.offer.encrypted", "Encrypted", 8, nil, 0x04)
f.gcm = ProtoField.bool("voip.offer.gcm", "AES-GCM", 8, nil, 0x08)
f.code = ProtoField.bool("voip.offer.code", "By code (SPAKE2)", 8, nil, 0x10)
f.red = ProtoField.bool("voip.offer.red", "Takes redundant audio (RFC 2198)", 8, nil, 0x20)
f.key = ProtoField.bytes("voip.key", "Key material")
f.refusal = ProtoField.uint8("voip.refusal", "Refusal", base.DEC, refusals)
f.reason = ProtoField.string("voip.reason", "Reason")
f.token = ProtoField.bytes("voip.token", "Path token")
f.sequence = ProtoField.uint64("voip.sequence", "Sequence")
f.tag = ProtoField.bytes("voip.tag", "Tag (HMAC-SHA256, 16 bytes)")

local function dissect(buffer, pinfo, tree)
    if buffer:len() < 12 or buffer(0, 2):string() ~= "vC" then
        return false
    end
    pinfo.cols.protocol = "voip"
    local kind = buffer(3, 1):uint()
    local name = types[bit.band(kind, 0x7f)] or "unknown"
    pinfo.cols.info = name
    local root = tree:add(voip, buffer(), "voip call control, " .. name)
    root:add(f.version, buffer(2, 1))
    root:add(f.type, buffer(3, 1))
    root:add(f.authenticated, buffer(3, 1))
    root:add(f.call_id, buffer(4, 8))
    local body_end = buffer:len()
    if bit.band(kind, AUTHENTICATED) ~= 0 and body_end - 12 >= TRAILER then
        body_end = body_end - TRAILER
        root:add(f.sequence, buffer(body_end, 8))
        root:add(f.tag, buffer(body_end + 8, 16))
    end
    local body = body_end - 12
    local kind_code = bit.band(kind, 0x7f)
    if (kind_code == 1 or kind_code == 3) and body >= OFFER then
        root:add(f.ssrc, buffer(12, 4))
        root:add(f.payload_type, buffer(16, 1))
        root:add(f.frame_ms, buffer(17, 1))
        root:add(f.bitrate, buffer(18, 4))
        local flags = root:add(f.flags, buffer(22, 1))
        for _, field in ipairs({f.fec, f.dtx, f.encrypted, f.gcm, f.code, f.red}) do
            flags:add(field, buffer(22, 1))
        end
        if body > OFFER then
            root:add(f.key, buffer(12 + OFFER, body - OFFER))
        end
    elseif kind_code == 7 and body > 0 then
        root:add(f.key, buffer(12, body))
    elseif (kind_code == 9 or kind_code == 10) and body > 0 then
        root:add(f.token, buffer(12, body))
    elseif kind_code == 8 and body == 1 then
        root:add(f.refusal, buffer(12, 1))
    elseif kind_code == 5 and body >= 1 then
        local length = buffer(12, 1):uint()
        if length > 0 and length <= body - 1 then
            root:add(f.reason, buffer(13, length))
        end
    end
    return true
end

function voip.dissector(buffer, pinfo, tree)
    return dissect(buffer, pinfo, tree)
end

voip:register_heuristic("udp", dissect)
