-- A load shape with stages that ends the test: 20 users for 10 s, 60 for the next 10 s, 10 until 30 s, then stop.
--   cicada -f examples/lua/custom_shape.lua --headless
local Visitor = cicada.user { name = "Visitor", wait_time = cicada.constant(0.5) }
Visitor:task(function(self) self.client:get("/") end, { name = "index" })

local stages = { { until_s = 10, users = 20, rate = 5 }, { until_s = 20, users = 60, rate = 20 }, { until_s = 30, users = 10, rate = 10 } }
cicada.shape(function(run_time)
  for _, stage in ipairs(stages) do
    if run_time < stage.until_s then return { users = stage.users, spawn_rate = stage.rate } end
  end
  return nil -- the end of the test
end)
