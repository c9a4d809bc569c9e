-- cicada's Lua side: the `cicada` module a test file uses to define its user types, task sets, wait times, events
-- and load shape, and the methods a running task calls. Everything that needs the running user (a request, a
-- sleep, a cookie, a control-flow request) yields the task's coroutine to the Rust driver with a private token, so
-- task code reads like blocking code while other users go on.
local native, TOKEN, OP = ...

local yield = coroutine.yield
local traceback, place_of, defined_at = native.traceback, native.where, native.defined_at
local select, type, error, tostring, pcall, xpcall = select, type, error, tostring, pcall, xpcall
local setmetatable, ipairs = setmetatable, ipairs

local arm = native.arm

-- Hand an operation to the driver and wait for its answer; the watchdog's clock restarts when the task runs again.
local function ask(op, a, b)
  local answer = yield(TOKEN, op, a, b)
  arm()
  return answer
end

local cicada = {}
-- What the Rust side reads once the test file has run.
local registry = {
  types = {}, listeners = {}, shape = nil, settings = {}, messages = {}, data_sources = {}, checks = {},
  sealed = false,
}
-- Names of the test data sources and message kinds defined so far (to refuse a duplicate, and to check a name
-- where it is used, with the caller's FILE:LINE).
local source_names, message_kinds = {}, {}

-- "FILE:LINE" of the function `level` calls above the caller.
local function where(level)
  return place_of(level + 1) or "?"
end

local function fail(message, level)
  error(message, level + 1)
end

-- Wait times ------------------------------------------------------------------------------------------------------

local Wait = { __name = "cicada.wait_time" }

local function wait_time(kind, a, b)
  return setmetatable({ kind = kind, a = a, b = b }, Wait)
end

local function positive_number(value, what, level)
  if type(value) ~= "number" or value ~= value or value < 0 or value == math.huge then
    fail(what .. " must be a finite number >= 0, got " .. tostring(value), level + 1)
  end
end

function cicada.between(min, max)
  positive_number(min, "cicada.between(min, max): min", 2)
  positive_number(max, "cicada.between(min, max): max", 2)
  if max < min then fail("cicada.between(min, max): max (" .. max .. ") is below min (" .. min .. ")", 2) end
  return wait_time("between", min, max)
end

function cicada.constant(seconds)
  positive_number(seconds, "cicada.constant(seconds)", 2)
  return wait_time("constant", seconds)
end

function cicada.constant_pacing(seconds)
  positive_number(seconds, "cicada.constant_pacing(seconds)", 2)
  return wait_time("constant_pacing", seconds)
end

function cicada.constant_throughput(tasks_per_second)
  positive_number(tasks_per_second, "cicada.constant_throughput(tasks_per_second)", 2)
  if tasks_per_second == 0 then fail("cicada.constant_throughput(tasks_per_second) must be above 0", 2) end
  return wait_time("constant_throughput", tasks_per_second)
end

local function check_wait(value, what, level)
  if value == nil then return nil end
  if type(value) == "function" then return wait_time("function", value) end
  if getmetatable(value) ~= Wait then
    fail(what .. " must be cicada.between(..), cicada.constant(..), cicada.constant_pacing(..), "
      .. "cicada.constant_throughput(..) or a function(elapsed_seconds) returning seconds, got " .. type(value), level + 1)
  end
  return value
end

local function check_tags(tags, what, level)
  if tags == nil then return {} end
  if type(tags) == "string" then return { tags } end
  if type(tags) ~= "table" then fail(what .. " must be a list of strings", level + 1) end
  local out = {}
  for i, tag in ipairs(tags) do
    if type(tag) ~= "string" then fail(what .. "[" .. i .. "] must be a string, got " .. type(tag), level + 1) end
    out[i] = tag
  end
  return out
end

local function check_weight(weight, what, level)
  if weight == nil then return 1 end
  if math.type(weight) ~= "integer" or weight < 0 then
    fail(what .. " must be an integer >= 0, got " .. tostring(weight), level + 1)
  end
  return weight
end

-- Tasks of user types and task sets --------------------------------------------------------------------------------

local Set = { __name = "cicada.taskset" }
Set.__index = Set

-- `:task(fn)`, `:task(weight, fn)`, `:task(fn, { name =, tags = })`, `:task(weight, fn, opts)`, and the same with a
-- task set in place of the function.
local function add_task(owner, a, b, c)
  local weight, body, opts = 1, a, b
  if type(a) == "number" then weight, body, opts = a, b, c end
  weight = check_weight(weight, "task weight", 3)
  if opts ~= nil and type(opts) ~= "table" then fail("task options must be a table { name = .., tags = .. }", 3) end
  opts = opts or {}
  local entries = owner._def.entries
  if getmetatable(body) == Set then
    body._def.weight = (type(a) == "number") and weight or body._def.weight
    entries[#entries + 1] = { set = body._def }
    return owner
  end
  if type(body) ~= "function" then
    fail("task must be a function(self) or a task set, got " .. type(body), 3)
  end
  local name = opts.name
  if name ~= nil and type(name) ~= "string" then fail("task name must be a string", 3) end
  entries[#entries + 1] = {
    fn = body,
    weight = weight,
    name = name or defined_at(body),
    tags = check_tags(opts.tags, "task tags", 3),
  }
  return owner
end

local function new_set(spec, order, level)
  if type(spec) == "string" then spec = { name = spec } end
  if type(spec) ~= "table" then fail("a task set takes a table: { name = \"checkout\" }", level + 1) end
  if type(spec.name) ~= "string" or spec.name == "" then fail("a task set needs a name (a string)", level + 1) end
  local set = {}
  set._def = {
    name = spec.name,
    order = order,
    weight = check_weight(spec.weight, "weight", level + 1),
    tags = check_tags(spec.tags, "tags", level + 1),
    wait_time = check_wait(spec.wait_time, "wait_time", level + 1),
    entries = {},
    where = where(level + 1),
    owner = set,
  }
  return setmetatable(set, Set)
end

function Set:task(a, b, c) return add_task(self, a, b, c) end

function cicada.taskset(spec) return new_set(spec, "random", 2) end
function cicada.sequential(spec) return new_set(spec, "sequential", 2) end

-- The HTTP client every user reaches as self.client ------------------------------------------------------------------

local build_request = native.build_request
local Client = {}

local function request(method, path, opts)
  local ok, spec = pcall(build_request, method, path, opts)
  if not ok then error(tostring(spec), 3) end
  return ask(OP.request, spec)
end

for _, method in ipairs({ "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD" }) do
  Client[method:lower()] = function(_, path, opts) return request(method, path, opts) end
end
function Client:request(method, path, opts)
  if type(method) ~= "string" then error("client:request(method, path, opts): method must be a string", 2) end
  return request(method:upper(), path, opts)
end
function Client:cookie(name) return ask(OP.cookie, name) end
function Client:clear_cookies() return ask(OP.clear_cookies) end
function Client:set_basic_auth(user, password)
  if type(user) ~= "string" or type(password) ~= "string" then
    error("client:set_basic_auth(user, password) takes two strings", 2)
  end
  return ask(OP.basic_auth, user, password)
end
function Client:clear_basic_auth() return ask(OP.basic_auth) end

-- User types ----------------------------------------------------------------------------------------------------------

-- Methods every user has (self:stop_user() ...), found through its type.
local UserMethods = {}
UserMethods.__index = UserMethods

function UserMethods:task(a, b, c) return add_task(self, a, b, c) end
function UserMethods:sleep(seconds)
  positive_number(seconds, "sleep(seconds)", 2)
  return ask(OP.sleep, seconds)
end
function UserMethods:stop_user() return ask(OP.flow, "stop_user") end
function UserMethods:interrupt(reschedule) return ask(OP.flow, "interrupt", reschedule ~= false) end
function UserMethods:reschedule() return ask(OP.flow, "reschedule") end
function UserMethods:record(sample) return cicada.record(sample) end
function UserMethods:next_item(name)
  if type(name) ~= "string" then error("next_item(name): name must be a string, got " .. type(name), 2) end
  if not source_names[name] then
    local names = {}
    for known in pairs(source_names) do names[#names + 1] = known end
    table.sort(names)
    local known = #names > 0 and table.concat(names, ", ") or "none; define one with cicada.data_source(name, { .. })"
    error("next_item: no test data source `" .. name .. "` (this test defines: " .. known .. ")", 2)
  end
  -- A CSV source's rows are decoded by column name (a table of strings); other items as the JSON they are.
  return ask(OP.next_item, name, source_names[name] == "csv")
end

local known_user_keys = {
  name = true, weight = true, fixed_count = true, host = true, wait_time = true, tags = true, client = true,
  arrival_rate = true,
}

function cicada.user(spec)
  if type(spec) ~= "table" then fail("cicada.user takes a table: cicada.user { name = \"Shopper\" }", 2) end
  for key in pairs(spec) do
    if not known_user_keys[key] then
      fail("cicada.user: unknown key `" .. tostring(key) .. "` (known: name, weight, fixed_count, host, wait_time, tags, client, arrival_rate)", 2)
    end
  end
  if type(spec.name) ~= "string" or spec.name == "" then fail("cicada.user: name must be a non-empty string", 2) end
  for _, other in ipairs(registry.types) do
    if other.name == spec.name then fail("cicada.user: a user type named `" .. spec.name .. "` already exists", 2) end
  end
  if spec.fixed_count ~= nil and (math.type(spec.fixed_count) ~= "integer" or spec.fixed_count < 0) then
    fail("cicada.user: fixed_count must be an integer >= 0", 2)
  end
  if spec.host ~= nil and type(spec.host) ~= "string" then fail("cicada.user: host must be a string URL", 2) end
  if spec.client ~= nil and type(spec.client) ~= "table" then
    fail("cicada.user: client must be a table of client options { timeout = 5, http = \"http2\", .. }", 2)
  end
  if spec.arrival_rate ~= nil and type(spec.arrival_rate) ~= "table" then
    fail("cicada.user: arrival_rate must be a table: { rate = 50, max_concurrent = 200 } or { start = 10, stages = { { duration = 60, target = 100 } } }", 2)
  end
  local user_type = setmetatable({ client = Client }, UserMethods)
  user_type.__index = user_type
  local def = {
    name = spec.name,
    weight = check_weight(spec.weight, "cicada.user: weight", 2),
    fixed_count = spec.fixed_count,
    host = spec.host,
    client = spec.client,
    arrival_rate = spec.arrival_rate,
    wait_time = check_wait(spec.wait_time, "cicada.user: wait_time", 2),
    tags = check_tags(spec.tags, "cicada.user: tags", 2),
    entries = {},
    where = where(2),
    owner = user_type,
  }
  user_type._def = def
  registry.types[#registry.types + 1] = def
  return user_type
end

-- Custom clients, control flow, events, shapes -------------------------------------------------------------------------

function cicada.record(sample)
  if type(sample) ~= "table" then error("cicada.record takes a table { type =, name =, response_time =, ... }", 2) end
  if type(sample.type) ~= "string" or type(sample.name) ~= "string" then
    error("cicada.record: type and name must be strings", 2)
  end
  local rt = sample.response_time
  if type(rt) ~= "number" or not (rt >= 0 and rt < math.huge) then
    error("cicada.record: response_time must be a number of milliseconds >= 0", 2)
  end
  local size = sample.response_length or 0
  if math.type(size) ~= "integer" or size < 0 then error("cicada.record: response_length must be an integer >= 0", 2) end
  if sample.error ~= nil and type(sample.error) ~= "string" then sample.error = tostring(sample.error) end
  return ask(OP.record, sample)
end

function cicada.sleep(seconds)
  positive_number(seconds, "cicada.sleep(seconds)", 2)
  return ask(OP.sleep, seconds)
end

function cicada.stop_test() return ask(OP.flow, "stop_test") end

local known_events = {
  init = true, test_start = true, test_stopping = true, test_stop = true, spawning_complete = true,
  request = true, user_error = true, reset_stats = true, usage_monitor = true, cpu_warning = true, quitting = true,
  quit = true,
}

function cicada.on(event, listener)
  if not known_events[event] then
    local names = {}
    for name in pairs(known_events) do names[#names + 1] = name end
    table.sort(names)
    fail("cicada.on: unknown event `" .. tostring(event) .. "` (known: " .. table.concat(names, ", ") .. ")", 2)
  end
  if type(listener) ~= "function" then fail("cicada.on(event, listener): listener must be a function", 2) end
  local list = registry.listeners[event]
  if list == nil then list = {}; registry.listeners[event] = list end
  list[#list + 1] = listener
end

function cicada.shape(tick)
  if type(tick) ~= "function" then
    fail("cicada.shape takes a function(run_time_seconds) returning { users =, spawn_rate =, user_types = } or nil", 2)
  end
  if registry.shape ~= nil then fail("cicada.shape: a load shape is already set", 2) end
  registry.shape = tick
end

local known_settings = { max_busy_seconds = true, memory_limit_mib = true }

function cicada.settings(values)
  if type(values) ~= "table" then fail("cicada.settings takes a table", 2) end
  for key, value in pairs(values) do
    if not known_settings[key] then
      fail("cicada.settings: unknown key `" .. tostring(key) .. "` (known: max_busy_seconds, memory_limit_mib)", 2)
    end
    if type(value) ~= "number" or not (value > 0 and value < math.huge) then
      fail("cicada.settings: " .. key .. " must be a finite number > 0", 2)
    end
    registry.settings[key] = value
  end
end

-- Custom messages and test data ---------------------------------------------------------------------------------

-- Call a native function; its error is raised at the caller of the cicada function that called this (`level` 2
-- there), so that it reads `FILE:LINE: message`.
local function checked(level, f, ...)
  local ok, result = pcall(f, ...)
  if not ok then
    -- The message alone: mlua adds the native call's own traceback, which shows only cicada's machinery.
    local message = tostring(result)
    message = message:match("^(.-)\nstack traceback:") or message
    error((message:gsub("^runtime error: ", "")), level + 1)
  end
  return result
end

local function top_level_only(what, level)
  if registry.sealed then
    fail(what .. " defines part of the test: call it at the test file's top level, not while the test runs", level + 1)
  end
end

local MAX_KIND_BYTES = 128

-- A pass/fail check on the run's results, as `--check` (`cicada.check("p95<300ms")`); parsed when the test loads.
function cicada.check(expr)
  top_level_only("cicada.check", 2)
  if type(expr) ~= "string" then fail("cicada.check(expr): expr must be a string such as \"p95<300ms\"", 2) end
  registry.checks[#registry.checks + 1] = { expr = expr, where = where(2) }
end

function cicada.on_message(kind, handler)
  top_level_only("cicada.on_message", 2)
  if type(kind) ~= "string" or #kind == 0 or #kind > MAX_KIND_BYTES then
    fail("cicada.on_message(kind, handler): kind must be a string of 1 to " .. MAX_KIND_BYTES .. " bytes", 2)
  end
  if kind:sub(1, 7) == "cicada." then
    fail("cicada.on_message: message kind `" .. kind .. "` is reserved for cicada's own use (kinds starting with "
      .. "\"cicada.\"): choose another kind", 2)
  end
  if type(handler) ~= "function" then
    fail("cicada.on_message(kind, handler): handler must be a function(data, source)", 2)
  end
  if message_kinds[kind] then fail("cicada.on_message: a handler for `" .. kind .. "` is registered already", 2) end
  message_kinds[kind] = true
  registry.messages[#registry.messages + 1] = { kind = kind, handler = handler }
end

function cicada.send_message(kind, data)
  local sent = checked(2, native.send_message, kind, data)
  return sent
end

function cicada.send_message_to(worker, kind, data)
  if type(worker) ~= "string" then error("cicada.send_message_to(worker, kind, data): worker must be a string", 2) end
  local sent = checked(2, native.send_message_to, worker, kind, data)
  return sent
end

function cicada.workers()
  local workers = checked(2, native.workers)
  return workers
end

local known_source_keys = {
  iter = true, csv = true, json_lines = true, pushed = true, when_exhausted = true, batch_size = true,
}
local origins = { "iter", "csv", "json_lines", "pushed" }
local exhausted_modes = { stop_user = true, wait = true, cycle = true }
local MAX_SOURCES, MAX_SOURCE_NAME_BYTES, MAX_BATCH_SIZE = 64, 128, 1024

function cicada.data_source(name, spec)
  top_level_only("cicada.data_source", 2)
  local what = "cicada.data_source(name, { .. })"
  if type(name) ~= "string" or #name == 0 or #name > MAX_SOURCE_NAME_BYTES then
    fail(what .. ": name must be a string of 1 to " .. MAX_SOURCE_NAME_BYTES .. " bytes", 2)
  end
  if source_names[name] then fail("cicada.data_source: a source named `" .. name .. "` exists already", 2) end
  if #registry.data_sources >= MAX_SOURCES then fail("cicada.data_source: a test defines at most " .. MAX_SOURCES .. " sources", 2) end
  if type(spec) ~= "table" then
    fail(what .. ": the source is a table { iter = {..} | csv = \"file.csv\" | json_lines = \"file.jsonl\" | pushed = true }", 2)
  end
  for key in pairs(spec) do
    if not known_source_keys[key] then
      fail("cicada.data_source: unknown key `" .. tostring(key) .. "` (known: iter, csv, json_lines, pushed, when_exhausted, batch_size)", 2)
    end
  end
  local origin
  for _, key in ipairs(origins) do
    if spec[key] ~= nil then
      if origin ~= nil then fail("cicada.data_source: give one of iter, csv, json_lines, pushed; not both " .. origin .. " and " .. key, 2) end
      origin = key
    end
  end
  if origin == nil then fail("cicada.data_source: give one of iter = {..}, csv = \"file.csv\", json_lines = \"file.jsonl\", pushed = true", 2) end
  local value = spec[origin]
  if origin == "iter" and type(value) ~= "table" then fail("cicada.data_source: iter must be a list of items", 2) end
  if (origin == "csv" or origin == "json_lines") and type(value) ~= "string" then
    fail("cicada.data_source: " .. origin .. " must be the path of a file (relative to the test file)", 2)
  end
  if origin == "pushed" and value ~= true then fail("cicada.data_source: pushed must be true", 2) end
  local when = spec.when_exhausted or "stop_user"
  if not exhausted_modes[when] then
    fail("cicada.data_source: when_exhausted must be \"stop_user\", \"wait\" or \"cycle\", got " .. tostring(when), 2)
  end
  local batch = spec.batch_size
  if batch ~= nil and (math.type(batch) ~= "integer" or batch < 1 or batch > MAX_BATCH_SIZE) then
    fail("cicada.data_source: batch_size must be an integer from 1 to " .. MAX_BATCH_SIZE .. ", got " .. tostring(batch), 2)
  end
  source_names[name] = origin
  registry.data_sources[#registry.data_sources + 1] = {
    name = name, origin = origin, value = value, when_exhausted = when, batch_size = batch, where = where(2),
  }
end

function cicada.push_item(name, item)
  if type(name) ~= "string" then error("cicada.push_item(name, item): name must be a string", 2) end
  local pushed = checked(2, native.push_item, name, item)
  return pushed
end

function cicada.csv_cycle(file)
  if type(file) ~= "string" then error("cicada.csv_cycle(file): file must be the path of a CSV file", 2) end
  local cycle = checked(2, native.csv_cycle, file)
  return cycle
end

cicada.read_file = native.read_file
cicada.time = native.time
cicada.runner = native.runner

-- What the driver runs in each task's coroutine: the task, with errors turned into a message and a traceback. ---------

local function on_error(message)
  if type(message) ~= "string" then message = tostring(message) end
  return { message, traceback(2) }
end

local function run_task(body, user)
  arm()
  local ok, err = xpcall(body, on_error, user)
  if ok then return end
  if type(err) ~= "table" then err = { tostring(err), "" } end
  return TOKEN, OP.error, err[1], err[2]
end

-- Listeners, shapes and wait-time functions are called through this, so the watchdog is armed under the state's
-- lock, by the call itself, not by a caller still waiting for the lock.
local function call_armed(f, ...)
  arm()
  return f(...)
end

-- A new user's self: its type's fields and methods, its own id and random generator.
local function new_user(user_type, id, rng)
  return setmetatable({ id = id, rng = rng }, user_type)
end

return cicada, registry, run_task, new_user, call_armed
