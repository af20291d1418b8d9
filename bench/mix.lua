-- wrk script: a call centre's webhook traffic, as GET requests with the PBX's parameters.
--
-- Each wrk thread plays calls one after another and sends their webhooks in order, so the mix
-- follows from how calls go rather than from fixed weights: inbound queue calls (ringing one to
-- three agents, some abandoned, some recorded, a few spied on), outbound calls, and agent
-- state/login/logout events in between. Every call gets a call_id unique to the run.
--
-- Arguments (after `--`):
--   1. run tag (digits): makes call_ids unique across runs;
--   2. "max" for a closed loop (as fast as the server answers), or the interval between two
--      requests of one wrk *thread* in microseconds for a paced, open-loop run: the thread's
--      requests are due on a fixed schedule, and whichever of its connections is free sends the
--      next one due (a pool, as a client with many keep-alive connections would). A request is
--      charged from its *intended* send time, so a stalled server is charged for the requests it
--      delayed (the coordinated-omission correction wrk2 makes; wrk2 is not packaged by Debian).
--      wrk's script API does not say which connection a response came on, so a thread's answers
--      are matched to its requests in send order: exact while answers come back in that order;
--      two answers that overtake each other get each other's latency (the slower of the two is
--      then under-charged by at most the overtaking gap). Enough connections that the pool is
--      never all busy keep the client out of the measurement (bench/_wrk.py).

-- done() prints one line "BENCHJSON {...}" that bench/_wrk.py reads.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local QUEUES = { "helpdesk", "sales", "billing", "retention", "vip" }
local STATES = { "pause", "lunch", "training", "available", "backoffice" }
local AGENTS = 40

-- Thread setup (main Lua state) -------------------------------------------------------------
local threads = {}
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

-- Per-thread state ----------------------------------------------------------------------------
local pending = {} -- webhook paths of the call being played, in order
local head = 1
local calls = 0
local run_tag = "0"
local interval = nil -- paced: microseconds between two requests of this thread (all its connections)
local next_due = nil
-- Paced: slots claimed by delay() not yet sent (FIFO), and the requests sent and not yet
-- answered (FIFO of intended time, send time). Ring buffers indexed by ever-growing counters.
local slots, slot_head, slot_tail = {}, 1, 0
local due, sent, out_head, out_tail = {}, {}, 1, 0
hist = {}   -- latency histogram: bucket floor(100*ln(us)) -> count (1% resolution)
counts = {} -- requests sent per event

function init(args)
  run_tag = args[1] or "0"
  local mode = args[2] or "max"
  math.randomseed(tonumber(run_tag) % 1000003 + (tid or 0) * 7919)
  if mode == "max" then
    delay = nil
    response = nil
  else
    interval = tonumber(mode)
  end
end

local function agent()
  local n = math.random(AGENTS)
  return "agent" .. n, tostring(100 + n)
end

local function phone()
  return string.format("+4202%08d", math.random(0, 99999999))
end

local function add(event, query)
  pending[#pending + 1] = "/" .. event .. "?" .. query
end

local function dial_params(call, caller, dialed, exten, user, direction)
  return "caller_num=" .. caller .. "&caller_exten=&caller_name=Caller%20" .. math.random(999) ..
      "&dialed_num=" .. dialed .. "&dialed_exten=" .. exten .. "&line_num=" .. exten ..
      "&line_name=" .. user .. "&line_userid=" .. user .. "&direction=" .. direction .. call
end

local function inbound(call)
  local caller, did = phone(), "591166200"
  local queue = QUEUES[math.random(#QUEUES)]
  add("start_call", "caller_type=external&caller_num=" .. caller .. "&dialed_num=" .. did ..
    "&target_num=" .. did .. call)
  add("queue_in", "caller_num=" .. caller .. "&dialed_num=" .. did .. "&queue_name=" .. queue .. call)
  local rings = math.random(3)
  local answered = math.random() < 0.85
  local user, exten
  for r = 1, rings do
    user, exten = agent()
    add("start_int_dial", dial_params(call, caller, did, exten, user, "incoming") ..
      "&caller_type=external&queue_name=" .. queue .. "&queue_name=" .. queue)
    if r < rings or not answered then
      if math.random() < 0.3 then
        add("exten_paused", "exten=" .. exten .. "&reason=unanswered_queue_call" .. call)
      end
      add("hangup_internal", "line_num=" .. exten .. "&line_userid=" .. user .. call)
    end
  end
  if answered then
    add("answered_internal", dial_params(call, caller, did, exten, user, "incoming") .. "&caller_type=external")
    add("queue_out", "queue_name=" .. queue .. call)
    local recorded = math.random() < 0.2
    if recorded then add("call_recording_start", call:sub(2)) end
    if math.random() < 0.02 then
      local spy, spy_exten = agent()
      local spy_q = "spying_exten=" .. spy_exten .. "&spying_target_exten=" .. exten .. "&spying_userid=" .. spy ..
          "&spying_target_userid=" .. user .. "&spy_type=spy" .. call
      add("call_spy_start", spy_q)
      add("call_spy_end", spy_q)
    end
    if recorded then add("call_recording_stop", call:sub(2)) end
    add("hangup_internal", "line_num=" .. exten .. "&line_userid=" .. user .. call)
  else
    add("queue_out", "queue_name=" .. queue .. call)
  end
  add("call_end", call:sub(2))
end

local function outbound(call)
  local user, exten = agent()
  local callee = phone()
  add("start_call", "caller_type=internal&caller_num=" .. exten .. "&caller_userid=" .. user ..
    "&dialed_num=" .. callee .. "&target_num=" .. callee .. call)
  add("start_ext_dial", dial_params(call, exten, callee, "", user, "outgoing"))
  if math.random() < 0.7 then
    add("answered_external", dial_params(call, exten, callee, "", user, "outgoing"))
  end
  add("hangup_internal", "line_num=" .. exten .. "&line_userid=" .. user .. call)
  add("call_end", call:sub(2))
end

local function agent_events()
  local user, exten = agent()
  local x = math.random()
  if x < 0.1 then
    add("pbx_agent_login", "userid=" .. user .. "&exten=" .. exten)
  elseif x < 0.2 then
    add("pbx_agent_logout", "userid=" .. user .. "&reason=pause")
  else
    add("pbx_agent_set_state", "userid=" .. user .. "&state_name=" .. STATES[math.random(#STATES)])
  end
end

local function next_call()
  pending, head = {}, 1
  calls = calls + 1
  -- Asterisk-style unique id: "<epoch>.<sequence>", unique per run tag, thread and call.
  local call = "&call_id=" .. run_tag .. "." .. (tid or 0) .. string.format("%09d", calls) ..
      "&cel_id=" .. math.random(10000000, 99999999) .. "&custom_call_id=c" .. calls
  if math.random() < 0.8 then inbound(call) else outbound(call) end
  if math.random() < 0.5 then agent_events() end
end

function request()
  if head > #pending then next_call() end
  local path = pending[head]
  head = head + 1
  local event = path:match("^/([%w_]+)")
  counts[event] = (counts[event] or 0) + 1
  -- A request with no slot claimed is wrk's own check of the script (one call of request()
  -- on the first thread before the run): nothing is sent, nothing will be answered.
  if interval and slot_head <= slot_tail then
    local slot = slots[slot_head]
    slots[slot_head] = nil
    slot_head = slot_head + 1
    out_tail = out_tail + 1
    due[out_tail], sent[out_tail] = slot, now_us()
  end
  return wrk.format("GET", path)
end

-- Paced mode only (init() removes these in "max" mode) -----------------------------------------
function delay()
  local now = now_us()
  if next_due == nil then
    next_due = now + math.random() * interval -- spread the threads' schedules
  else
    next_due = next_due + interval
  end
  slot_tail = slot_tail + 1
  slots[slot_tail] = next_due
  local wait = (next_due - now) / 1000
  if wait < 1 then return 0 end
  return math.floor(wait)
end

function response(status, headers, body)
  local i = out_head
  out_head = i + 1
  local intended, sent_at = due[i], sent[i]
  due[i], sent[i] = nil, nil
  if intended == nil then return end -- more answers than requests sent: not counted (matched < requests)
  local lat = now_us() - math.min(intended, sent_at) -- early sends (ms timers) count from the send
  if lat < 1 then lat = 1 end
  local b = math.floor(100 * math.log(lat))
  hist[b] = (hist[b] or 0) + 1
end

-- Summary (main Lua state) ---------------------------------------------------------------------
local function percentile(merged, total, p)
  local keys = {}
  for k in pairs(merged) do keys[#keys + 1] = k end
  table.sort(keys)
  local target, seen = total * p / 100, 0
  for _, k in ipairs(keys) do
    seen = seen + merged[k]
    if seen >= target then return math.exp((k + 0.5) / 100) end
  end
  return 0
end

function done(summary, latency, requests)
  local merged, total, events = {}, 0, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("hist")) do
      merged[k] = (merged[k] or 0) + v
      total = total + v
    end
    for k, v in pairs(t:get("counts")) do events[k] = (events[k] or 0) + v end
  end
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"mean":%.1f}',
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean),
  }
  if total > 0 then
    parts[#parts + 1] = string.format(
      '"intended_latency_us":{"count":%d,"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f}', total,
      percentile(merged, total, 50), percentile(merged, total, 90), percentile(merged, total, 99),
      percentile(merged, total, 99.9))
  end
  local ev = {}
  for k, v in pairs(events) do ev[#ev + 1] = string.format('"%s":%d', k, v) end
  parts[#parts + 1] = '"events":{' .. table.concat(ev, ",") .. "}"
  io.write("BENCHJSON {" .. table.concat(parts, ",") .. "}\n")
end
