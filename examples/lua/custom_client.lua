-- A client that is not HTTP, whose calls land in the same stats: cicada.record (Locust's events.request.fire).
-- Lua here has no sockets, so this "client" times a local computation (a checksum of a fetched page); a real one
-- would time its own protocol's call the same way.
--   cicada -f examples/lua/custom_client.lua --headless -u 5 -t 20s
local Worker = cicada.user { name = "Worker", wait_time = cicada.between(0.1, 0.3) }

local function checksum(text)
  local sum = 0
  for i = 1, #text do sum = (sum * 31 + text:byte(i)) % 4294967296 end
  return sum
end

Worker:task(function(self)
  local page = self.client:get("/bytes/4096", { name = "/bytes/[n]" }).text
  local started = cicada.time()
  local sum = checksum(page)
  local elapsed_ms = (cicada.time() - started) * 1000
  self:record { type = "checksum", name = "bytes-4096", response_time = elapsed_ms, response_length = #page,
                error = (sum == 0) and "empty checksum" or nil }
end, { name = "checksum_page" })
