-- Wireshark / tshark dissector for SCAFFOLD (docs/operations.md §2).
--
-- Dissects what scaffold puts on the wire (docs/protocol.md):
--   * the 76-byte SCAFFOLD header (§2) of every data-plane UDP datagram, and after it
--   * the datagram segment (proto 1, §4.1), the stream segment (proto 2, §4.2), the signal
--     (proto 3, §4.3) or the liveness bundle (proto 5, §4.4);
--   * the control connection's framing and records (§6.1): a 4-byte length, then one
--     MessagePack map whose "type" names the record (an empty frame: a keepalive). Control
--     connections protected by TLS cannot be read this way (Wireshark shows them as TLS).
--
-- Ports are ephemeral (loopback, namespaces), so both dissectors are heuristic: a UDP datagram
-- is SCAFFOLD if its header parses (version 1, a known proto, no unknown flag, a non-zero
-- Object ID); a TCP stream is a control connection if it starts with a frame whose record is a
-- map with a known "type". The project's default ports (UDP 7000, TCP 7400) are registered too.
-- Where another protocol owns an ephemeral port, ask for heuristics first:
--   tshark -X lua_script:scaffold.lua -o udp.try_heuristic_first:TRUE -o tcp.try_heuristic_first:TRUE
--
-- Install: `scaffold dissector install` (copies this file to ~/.local/lib/wireshark/plugins/).
-- Everything it reads is hostile: every read is bounds-checked, MessagePack nesting and item
-- counts are bounded, and a segment that does not parse is flagged malformed (expert info)
-- with the reason scaffold itself would count the drop under.

local HEADER_LEN = 76
local DEFAULT_DATA_PORT = 7000
local DEFAULT_CONTROL_PORT = 7400
local MAX_FRAME = 64 * 1024 * 1024
local MAX_DEPTH = 12          -- MessagePack nesting the control dissector follows
local MAX_SHOWN = 256         -- items of one map or array shown in the tree
local MAX_ITEMS = 1000000     -- items of one record walked at all

-- -- the data plane ---------------------------------------------------------------------------

local scaffold = Proto("scaffold", "SCAFFOLD")

local PROTOS = { [1] = "DATAGRAM", [2] = "STREAM", [3] = "SIGNAL", [4] = "PRESENCE", [5] = "LIVENESS" }
local PRESENCE = 4
local LIVENESS = 5
local DGRAM_TYPES = { [1] = "DATA", [2] = "CLOSE", [3] = "MOVED" }
local STREAM_TYPES = {
    [1] = "SYN", [2] = "SYN_ACK", [3] = "DATA", [4] = "FIN",
    [5] = "RST", [6] = "KEEPALIVE", [7] = "RESUME", [8] = "RESUME_ACK",
    [9] = "PROBE", [10] = "PROBE_ACK", [11] = "RETRY", [12] = "NOT_HERE",
}
local BUNDLE_TYPES = { [1] = "PROBE", [2] = "ANSWER" }
local SIGNAL_TYPES = { [1] = "OBJECT_NOT_FOUND", [2] = "REFINE", [3] = "UNREACHABLE" }

local f = scaffold.fields
f.version = ProtoField.uint8("scaffold.version", "Version")
f.proto = ProtoField.uint8("scaffold.proto", "Proto", base.DEC, PROTOS)
f.flags = ProtoField.uint8("scaffold.flags", "Flags", base.HEX)
f.flag_trace = ProtoField.bool("scaffold.flags.trace", "TRACE", 8, nil, 0x01)
f.flag_redirected = ProtoField.bool("scaffold.flags.redirected", "REDIRECTED", 8, nil, 0x02)
f.flag_to_client = ProtoField.bool("scaffold.flags.to_client", "TO_CLIENT", 8, nil, 0x04)
f.ttl = ProtoField.uint8("scaffold.ttl", "TTL")
f.flow = ProtoField.uint64("scaffold.flow", "Flow ID", base.HEX)
f.dst_obj = ProtoField.bytes("scaffold.dst.obj", "Destination Object ID")
f.dst_dc = ProtoField.uint32("scaffold.dst.dc", "Destination DC ID")
f.dst_host = ProtoField.uint64("scaffold.dst.host", "Destination Host ID")
f.dst_socket = ProtoField.uint32("scaffold.dst.socket", "Destination Socket ID")
f.src_dc = ProtoField.uint32("scaffold.src.dc", "Source DC ID")
f.src_host = ProtoField.uint64("scaffold.src.host", "Source Host ID")
f.src_socket = ProtoField.uint32("scaffold.src.socket", "Source Socket ID")
f.refined = ProtoField.string("scaffold.refined", "Refined to")

f.dg_type = ProtoField.uint8("scaffold.datagram.type", "Type", base.DEC, DGRAM_TYPES)
f.dg_nonce = ProtoField.uint64("scaffold.datagram.nonce", "Nonce", base.HEX)
f.dg_payload = ProtoField.bytes("scaffold.datagram.payload", "Payload")

f.st_type = ProtoField.uint8("scaffold.stream.type", "Type", base.DEC, STREAM_TYPES)
f.st_flags = ProtoField.uint8("scaffold.stream.flags", "Flags", base.HEX)
f.st_flag_ack = ProtoField.bool("scaffold.stream.flags.ack", "ACK", 8, nil, 0x01)
f.st_flag_fin_received = ProtoField.bool("scaffold.stream.flags.fin_received", "FIN_RECEIVED", 8, nil, 0x02)
f.st_flag_fin_acked = ProtoField.bool("scaffold.stream.flags.fin_acked", "FIN_ACKED", 8, nil, 0x04)
f.st_len = ProtoField.uint16("scaffold.stream.len", "Payload length")
f.st_window = ProtoField.uint32("scaffold.stream.window", "Receive window")
f.st_nonce = ProtoField.uint64("scaffold.stream.nonce", "Nonce", base.HEX)
f.st_seq = ProtoField.uint64("scaffold.stream.seq", "Sequence number")
f.st_ack = ProtoField.uint64("scaffold.stream.ack", "Acknowledgment")
f.st_tsval = ProtoField.uint32("scaffold.stream.tsval", "Timestamp value")
f.st_tsecr = ProtoField.uint32("scaffold.stream.tsecr", "Timestamp echo")
f.st_sack_count = ProtoField.uint8("scaffold.stream.sack_count", "SACK blocks")
f.st_sack_start = ProtoField.uint32("scaffold.stream.sack.start", "SACK start (above ack)")
f.st_sack_end = ProtoField.uint32("scaffold.stream.sack.end", "SACK end (above ack)")
f.st_payload = ProtoField.bytes("scaffold.stream.payload", "Payload")

f.sig_type = ProtoField.uint8("scaffold.signal.type", "Type", base.DEC, SIGNAL_TYPES)
f.sig_a = ProtoField.uint64("scaffold.signal.a", "Argument a")
f.sig_b = ProtoField.uint64("scaffold.signal.b", "Argument b")

f.lv_type = ProtoField.uint8("scaffold.liveness.type", "Type", base.DEC, BUNDLE_TYPES)
f.lv_count = ProtoField.uint16("scaffold.liveness.count", "Entries")
f.lv_bundle = ProtoField.uint32("scaffold.liveness.bundle", "Bundle ID")
f.lv_socket = ProtoField.uint32("scaffold.liveness.socket", "Socket ID")
f.lv_nonce = ProtoField.uint64("scaffold.liveness.nonce", "Flow nonce", base.HEX)

local ef_malformed = ProtoExpert.new(
    "scaffold.malformed", "Malformed SCAFFOLD packet", expert.group.MALFORMED, expert.severity.ERROR)
local ef_redirected = ProtoExpert.new(
    "scaffold.redirected", "Re-resolved after its host went away (REDIRECTED)", expert.group.SEQUENCE,
    expert.severity.NOTE)
scaffold.experts = { ef_malformed, ef_redirected }

local ZERO_OBJECT = string.rep("00", 32)
local ZERO_HOST = UInt64(0)

-- Whether ``tvb`` starts with a SCAFFOLD header scaffold itself would accept (wire/header.py).
local function is_header(tvb)
    if tvb:len() < HEADER_LEN then return false end
    if tvb(0, 1):uint() ~= 1 then return false end
    if PROTOS[tvb(1, 1):uint()] == nil then return false end
    if bit32.band(tvb(2, 1):uint(), 0xF8) ~= 0 then return false end
    -- a presence packet names no object: only its source is set (protocol §6.2)
    return tvb(1, 1):uint() == PRESENCE or tvb(12, 32):bytes():tohex() ~= ZERO_OBJECT
end

local function malformed(tree, pinfo, reason)
    tree:add_proto_expert_info(ef_malformed, reason)
    pinfo.cols.info:append(" [Malformed: " .. reason .. "]")
end

local function dissect_datagram(tvb, pinfo, tree)
    local sub = tree:add(scaffold, tvb, "Datagram segment")
    if tvb:len() < 12 then return malformed(sub, pinfo, "truncated") end
    local kind = tvb(0, 1):uint()
    sub:add(f.dg_type, tvb(0, 1))
    sub:add(f.dg_nonce, tvb(4, 8))
    if DGRAM_TYPES[kind] == nil then return malformed(sub, pinfo, "bad-datagram-type") end
    if tvb:len() > 12 then sub:add(f.dg_payload, tvb(12)) end
    pinfo.cols.info:append(" " .. DGRAM_TYPES[kind] .. " len=" .. (tvb:len() - 12))
end

local function dissect_stream(tvb, pinfo, tree)
    local sub = tree:add(scaffold, tvb, "Stream segment")
    local size = tvb:len()
    if size < 44 then return malformed(sub, pinfo, "truncated") end
    local kind = tvb(0, 1):uint()
    local length = tvb(2, 2):uint()
    local count = tvb(40, 1):uint()
    sub:add(f.st_type, tvb(0, 1))
    local flags = sub:add(f.st_flags, tvb(1, 1))
    flags:add(f.st_flag_ack, tvb(1, 1))
    flags:add(f.st_flag_fin_received, tvb(1, 1))
    flags:add(f.st_flag_fin_acked, tvb(1, 1))
    sub:add(f.st_len, tvb(2, 2))
    sub:add(f.st_window, tvb(4, 4))
    sub:add(f.st_nonce, tvb(8, 8))
    sub:add(f.st_seq, tvb(16, 8))
    sub:add(f.st_ack, tvb(24, 8))
    sub:add(f.st_tsval, tvb(32, 4))
    sub:add(f.st_tsecr, tvb(36, 4))
    sub:add(f.st_sack_count, tvb(40, 1))
    if STREAM_TYPES[kind] == nil then return malformed(sub, pinfo, "bad-stream-type") end
    if count > 4 then return malformed(sub, pinfo, "bad-sack") end
    local payload_at = 44 + count * 8
    if size < payload_at + length then return malformed(sub, pinfo, "truncated") end
    if size > payload_at + length then return malformed(sub, pinfo, "bad-length") end
    -- DATA and FIN carry the stream's bytes, a SYN and a SYN_ACK their first ones (§4.2.7), PROBE its padding (§4.2.6)
    if length > 0 and kind ~= 1 and kind ~= 2 and kind ~= 3 and kind ~= 4 and kind ~= 9 then return malformed(sub, pinfo, "bad-length") end
    for i = 0, count - 1 do
        local at = 44 + i * 8
        local start, stop = tvb(at, 4):uint(), tvb(at + 4, 4):uint()
        local block = sub:add(scaffold, tvb(at, 8), string.format("SACK block [ack+%d, ack+%d)", start, stop))
        block:add(f.st_sack_start, tvb(at, 4))
        block:add(f.st_sack_end, tvb(at + 4, 4))
        if not (0 < start and start < stop) then return malformed(block, pinfo, "bad-sack") end
    end
    if length > 0 then sub:add(f.st_payload, tvb(payload_at, length)) end
    local info = " " .. STREAM_TYPES[kind] .. " seq=" .. tostring(tvb(16, 8):uint64())
    if bit32.band(tvb(1, 1):uint(), 0x01) ~= 0 then
        info = info .. " ack=" .. tostring(tvb(24, 8):uint64())
    end
    pinfo.cols.info:append(info .. " win=" .. tvb(4, 4):uint() .. " len=" .. length)
end

local function dissect_signal(tvb, pinfo, tree)
    local sub = tree:add(scaffold, tvb, "Signal")
    if tvb:len() < 20 then return malformed(sub, pinfo, "truncated") end
    local kind = tvb(0, 1):uint()
    sub:add(f.sig_type, tvb(0, 1))
    sub:add(f.sig_a, tvb(4, 8))
    sub:add(f.sig_b, tvb(12, 8))
    if tvb:len() ~= 20 then return malformed(sub, pinfo, "bad-length") end
    if SIGNAL_TYPES[kind] == nil then return malformed(sub, pinfo, "bad-signal-type") end
    pinfo.cols.info:append(" " .. SIGNAL_TYPES[kind])
end

-- The keepalives of many stream flows between two hosts (protocol §4.4).
local function dissect_liveness(tvb, pinfo, tree)
    local sub = tree:add(scaffold, tvb, "Liveness bundle")
    if tvb:len() < 8 then return malformed(sub, pinfo, "truncated") end
    local kind, count = tvb(0, 1):uint(), tvb(2, 2):uint()
    sub:add(f.lv_type, tvb(0, 1))
    sub:add(f.lv_count, tvb(2, 2))
    sub:add(f.lv_bundle, tvb(4, 4))
    if BUNDLE_TYPES[kind] == nil then return malformed(sub, pinfo, "bad-bundle-type") end
    if count > 90 or (kind == 1 and count == 0) or tvb:len() ~= 8 + 12 * count then
        return malformed(sub, pinfo, "bad-length")
    end
    for i = 0, count - 1 do
        local at = 8 + i * 12
        local entry = sub:add(scaffold, tvb(at, 12), "Flow")
        entry:add(f.lv_socket, tvb(at, 4))
        entry:add(f.lv_nonce, tvb(at + 4, 8))
    end
    pinfo.cols.info:append(string.format(" %s bundle=%d flows=%d", BUNDLE_TYPES[kind], tvb(4, 4):uint(), count))
end

local SEGMENTS = { [1] = dissect_datagram, [2] = dissect_stream, [3] = dissect_signal, [5] = dissect_liveness }

local function dissect_packet(tvb, pinfo, tree)
    pinfo.cols.protocol = "SCAFFOLD"
    local proto, flags = tvb(1, 1):uint(), tvb(2, 1):uint()
    local t = tree:add(scaffold, tvb(0, HEADER_LEN), "SCAFFOLD header")
    t:add(f.version, tvb(0, 1))
    t:add(f.proto, tvb(1, 1))
    local ft = t:add(f.flags, tvb(2, 1))
    ft:add(f.flag_trace, tvb(2, 1))
    ft:add(f.flag_redirected, tvb(2, 1))
    ft:add(f.flag_to_client, tvb(2, 1))
    t:add(f.ttl, tvb(3, 1))
    t:add(f.flow, tvb(4, 8))
    t:add(f.dst_obj, tvb(12, 32))
    t:add(f.dst_dc, tvb(44, 4))
    t:add(f.dst_host, tvb(48, 8))
    t:add(f.dst_socket, tvb(56, 4))
    t:add(f.src_dc, tvb(60, 4))
    t:add(f.src_host, tvb(64, 8))
    t:add(f.src_socket, tvb(72, 4))
    if proto == PRESENCE then
        -- a host's sign of life to its gateway flow switch, a header alone (protocol §6.2)
        pinfo.cols.info = string.format("PRESENCE src=%d/%s", tvb(60, 4):uint(), tostring(tvb(64, 8):uint64()))
        return
    end
    -- How far the destination is refined: Obj ID -> DC ID -> Host ID -> Socket ID (§3).
    local level = "Object ID"
    if tvb(44, 4):uint() ~= 0 then level = "DC ID" end
    if tvb(48, 8):uint64() ~= ZERO_HOST then level = "Host ID" end
    if tvb(56, 4):uint() ~= 0 then level = "Socket ID" end
    t:add(f.refined, tvb(44, 16), level)
    if bit32.band(flags, 0x02) ~= 0 then t:add_proto_expert_info(ef_redirected) end
    pinfo.cols.info = string.format(
        "%s flow=%s obj=%s dst=%d/%s/%d%s",
        PROTOS[proto], tvb(4, 8):uint64():tohex(), tostring(tvb(12, 6):bytes()):lower(),
        tvb(44, 4):uint(), tostring(tvb(48, 8):uint64()), tvb(56, 4):uint(),
        bit32.band(flags, 0x01) ~= 0 and " TRACE" or "")
    if tvb:len() == HEADER_LEN then
        malformed(tree, pinfo, "truncated")  -- every proto has a segment after the header
    else
        SEGMENTS[proto](tvb(HEADER_LEN):tvb(), pinfo, tree)
    end
end

-- The size of the SCAFFOLD packet ``tvb`` starts with, where its segment says (streams and
-- signals); else all of ``tvb``.
local function packet_size(tvb)
    local proto = tvb(1, 1):uint()
    if proto == 2 and tvb:len() >= HEADER_LEN + 44 then
        return HEADER_LEN + 44 + tvb(HEADER_LEN + 40, 1):uint() * 8 + tvb(HEADER_LEN + 2, 2):uint()
    elseif proto == 3 then
        return HEADER_LEN + 20
    elseif proto == PRESENCE then
        return HEADER_LEN
    elseif proto == LIVENESS and tvb:len() >= HEADER_LEN + 8 then
        return HEADER_LEN + 8 + tvb(HEADER_LEN + 2, 2):uint() * 12
    end
    return tvb:len()
end

-- A capture taken where a node sends (loopback) may hold a GSO train as the kernel had it
-- before splitting it: packets of one size back to back, the last maybe shorter (protocol
-- §3.3). When another header follows the first packet, each is dissected on its own.
local function dissect_data(tvb, pinfo, tree)
    if not is_header(tvb) then return 0 end
    local total = tvb:len()
    local size = packet_size(tvb)
    if size >= HEADER_LEN and size < total and total - size >= HEADER_LEN and is_header(tvb(size):tvb()) then
        local count = 0
        for offset = 0, total - 1, size do
            dissect_packet(tvb(offset, math.min(size, total - offset)):tvb(), pinfo, tree)
            count = count + 1
        end
        pinfo.cols.info:append(string.format(" [train of %d]", count))
    else
        dissect_packet(tvb, pinfo, tree)
    end
    return total
end

function scaffold.dissector(tvb, pinfo, tree)
    return dissect_data(tvb, pinfo, tree)
end

scaffold:register_heuristic("udp", function(tvb, pinfo, tree)
    return dissect_data(tvb, pinfo, tree) > 0
end)
DissectorTable.get("udp.port"):add(DEFAULT_DATA_PORT, scaffold)

-- -- the control plane ------------------------------------------------------------------------

local control = Proto("scaffold_control", "SCAFFOLD control")
local c = control.fields
c.length = ProtoField.uint32("scaffold_control.length", "Frame length")
c.type = ProtoField.string("scaffold_control.type", "Record")
c.node = ProtoField.string("scaffold_control.node", "Node")
c.item = ProtoField.string("scaffold_control.item", "Item")
local ef_control_malformed = ProtoExpert.new(
    "scaffold_control.malformed", "Malformed control record", expert.group.MALFORMED, expert.severity.ERROR)
control.experts = { ef_control_malformed }

-- Record types (the "type" tag of every record, wire/control.py).
local RECORDS = {}
for _, name in ipairs({
    "hello", "welcome", "heartbeat", "bind", "unbind", "sync", "delta", "sync-request", "admin",
    "admin-reply", "link-settings", "node-stats", "drain", "migrate-out", "flows-out", "migrate-in",
    "relocate", "drain-done",
}) do RECORDS[name] = true end

-- MessagePack, bounded: returns (summary text, next offset) or raises an error (a string).
local MsgPack = {}

local function need(tvb, off, n)
    if n < 0 or off + n > tvb:len() then error("truncated", 0) end
end

function MsgPack.string(tvb, off, n)
    need(tvb, off, n)
    return tvb(off, n):string(), off + n
end

-- ``walk(tvb, off, tree, label, state)``: one value at ``off``; ``tree`` may be nil (skip).
local function walk(tvb, off, tree, label, state)
    state.items = state.items + 1
    if state.items > MAX_ITEMS then error("too many items", 0) end
    need(tvb, off, 1)
    local b = tvb(off, 1):uint()
    local text, after, count, is_map
    local header = 1
    if b <= 0x7f then text, after = tostring(b), off + 1
    elseif b >= 0xe0 then text, after = tostring(b - 256), off + 1
    elseif b >= 0xa0 and b <= 0xbf then
        local s, e = MsgPack.string(tvb, off + 1, b - 0xa0)
        text, after = '"' .. s .. '"', e
    elseif b >= 0x80 and b <= 0x8f then count, is_map = b - 0x80, true
    elseif b >= 0x90 and b <= 0x9f then count, is_map = b - 0x90, false
    elseif b == 0xc0 then text, after = "nil", off + 1
    elseif b == 0xc2 then text, after = "false", off + 1
    elseif b == 0xc3 then text, after = "true", off + 1
    elseif b == 0xc4 or b == 0xc5 or b == 0xc6 then
        local w = ({ [0xc4] = 1, [0xc5] = 2, [0xc6] = 4 })[b]
        need(tvb, off + 1, w)
        local n = tvb(off + 1, w):uint()
        need(tvb, off + 1 + w, n)
        text, after = n .. " bytes", off + 1 + w + n
    elseif b == 0xca then need(tvb, off + 1, 4); text, after = tostring(tvb(off + 1, 4):float()), off + 5
    elseif b == 0xcb then need(tvb, off + 1, 8); text, after = tostring(tvb(off + 1, 8):float()), off + 9
    elseif b >= 0xcc and b <= 0xcf then
        local w = 2 ^ (b - 0xcc)
        need(tvb, off + 1, w)
        text = w == 8 and tostring(tvb(off + 1, 8):uint64()) or tostring(tvb(off + 1, w):uint())
        after = off + 1 + w
    elseif b >= 0xd0 and b <= 0xd3 then
        local w = 2 ^ (b - 0xd0)
        need(tvb, off + 1, w)
        text = w == 8 and tostring(tvb(off + 1, 8):int64()) or tostring(tvb(off + 1, w):int())
        after = off + 1 + w
    elseif b >= 0xd9 and b <= 0xdb then
        local w = ({ [0xd9] = 1, [0xda] = 2, [0xdb] = 4 })[b]
        need(tvb, off + 1, w)
        local s, e = MsgPack.string(tvb, off + 1 + w, tvb(off + 1, w):uint())
        text, after = '"' .. s .. '"', e
    elseif b == 0xdc or b == 0xdd then
        local w = b == 0xdc and 2 or 4
        need(tvb, off + 1, w)
        count, is_map, header = tvb(off + 1, w):uint(), false, 1 + w
    elseif b == 0xde or b == 0xdf then
        local w = b == 0xde and 2 or 4
        need(tvb, off + 1, w)
        count, is_map, header = tvb(off + 1, w):uint(), true, 1 + w
    else
        error(string.format("unsupported MessagePack byte 0x%02x", b), 0)
    end
    if count == nil then
        if tree ~= nil then tree:add(c.item, tvb(off, after - off), text):set_text(label .. text) end
        return text, after
    end
    if state.depth >= MAX_DEPTH then error("nested too deep", 0) end
    state.depth = state.depth + 1
    local summary = is_map and ("{" .. count .. " entries}") or ("[" .. count .. " items]")
    local sub = nil
    if tree ~= nil then sub = tree:add(c.item, tvb(off, header), summary):set_text(label .. summary) end
    local at = off + header
    for i = 1, count do
        local shown = sub ~= nil and i <= MAX_SHOWN
        local item_label = "[" .. (i - 1) .. "] "
        if is_map then
            local key
            key, at = walk(tvb, at, nil, "", state)
            item_label = key:gsub('^"(.*)"$', "%1") .. ": "
        end
        local _
        _, at = walk(tvb, at, shown and sub or nil, item_label, state)
    end
    if sub ~= nil then
        sub:set_len(at - off)
        if count > MAX_SHOWN then sub:append_text(" (first " .. MAX_SHOWN .. " shown)") end
    end
    state.depth = state.depth - 1
    return summary, at
end

-- The "type" of the record at ``off`` (a map whose first key is "type"), or nil.
local function record_type(tvb, off, size)
    if size < 7 then return nil end
    local b = tvb(off, 1):uint()
    local first = off + 1
    if b == 0xde then first = off + 3 elseif b == 0xdf then first = off + 5
    elseif b < 0x81 or b > 0x8f then return nil end
    if first + 5 > off + size or tvb(first, 5):bytes():tohex():lower() ~= "a474797065" then return nil end
    local ok, name = pcall(walk, tvb(first + 5, size - (first + 5 - off)):tvb(), 0, nil, "", { items = 0, depth = 0 })
    if not ok or name:sub(1, 1) ~= '"' then return nil end
    name = name:sub(2, -2)
    if RECORDS[name] == nil then return nil end
    return name
end

local function frame_length(tvb, pinfo, off)
    return 4 + tvb(off, 4):uint()
end

local function dissect_frame(tvb, pinfo, tree)
    pinfo.cols.protocol = "SCAFFOLD-CTL"
    local size = tvb(0, 4):uint()
    local t = tree:add(control, tvb, "SCAFFOLD control record")
    t:add(c.length, tvb(0, 4))
    if size == 0 then   -- an empty frame: a node's keepalive, no record (§6.1, §6.6)
        t:append_text(" (keepalive)")
        local info = pinfo.cols.info
        if tostring(info):find("^SCAFFOLD control") == nil then info:set("SCAFFOLD control:") end
        info:append(" keepalive")
        return tvb:len()
    end
    local name = record_type(tvb, 4, size)
    if name == nil then
        t:add_proto_expert_info(ef_control_malformed, "not a scaffold record")
        return tvb:len()
    end
    t:add(c.type, tvb(4, size), name)
    local ok, err = pcall(walk, tvb(4, size):tvb(), 0, t, "record: ", { items = 0, depth = 0 })
    if not ok then
        t:add_proto_expert_info(ef_control_malformed, tostring(err))
    end
    local info = pinfo.cols.info
    local text = tostring(info)
    if text:find("^SCAFFOLD control") == nil then info:set("SCAFFOLD control:") end
    info:append(" " .. name)
    return tvb:len()
end

local function dissect_control(tvb, pinfo, tree)
    dissect_tcp_pdus(tvb, tree, 4, frame_length, dissect_frame, true)
    return tvb:len()
end

function control.dissector(tvb, pinfo, tree)
    return dissect_control(tvb, pinfo, tree)
end

control:register_heuristic("tcp", function(tvb, pinfo, tree)
    if tvb:len() < 11 then return false end
    local size = tvb(0, 4):uint()
    if size < 7 or size > MAX_FRAME then return false end
    if record_type(tvb, 4, math.min(size, tvb:len() - 4)) == nil then return false end
    pinfo.conversation = control   -- the rest of this connection, mid-frame segments included
    dissect_control(tvb, pinfo, tree)
    return true
end)
DissectorTable.get("tcp.port"):add(DEFAULT_CONTROL_PORT, control)
