-- User types that starve the generator, to watch the resource guard at work:
--   cicada -f examples/lua/guard_demo.lua --headless -u 25 -r 25 -t 30s --max-memory 300MiB MemoryHog
-- CpuBurner spins Lua between requests, MemoryHog keeps growing tables, UrlFlood sends a unique URL per request.
cicada.settings { memory_limit_mib = 1024 }

local CpuBurner = cicada.user { name = "CpuBurner", wait_time = cicada.constant(0) }
CpuBurner:task(function(self)
  local x = 0
  for i = 1, 2000000 do x = x + i % 7 end
  self.client:get("/fast")
end, { name = "burn" })

local MemoryHog = cicada.user { name = "MemoryHog", wait_time = cicada.constant(0.05) }
function MemoryHog:on_start() self.hoard = {} end
MemoryHog:task(function(self)
  self.hoard[#self.hoard + 1] = string.rep("x", 1024 * 1024)
  self.client:get("/fast")
end, { name = "hoard" })

local UrlFlood = cicada.user { name = "UrlFlood", wait_time = cicada.constant(0) }
UrlFlood:task(function(self)
  self.client:get("/items/" .. self.rng:int(1, 1000000000))
end, { name = "flood" })
