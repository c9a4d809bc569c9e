-- Judging a response after reading it (Locust's catch_response), and a task error with its cause.
--   cicada -f examples/lua/item_checks.lua --headless -u 10 -t 20s
local Checker = cicada.user { name = "Checker", wait_time = cicada.between(0.1, 0.3) }

Checker:task(function(self)
  local id = self.rng:int(1, 100)
  local response = self.client:get("/items/" .. id, { name = "/items/[id]", catch_response = true })
  local ok, item = pcall(response.json, response)
  if not ok then error("the item page did not parse: " .. tostring(item)) end
  if item.id ~= id then
    response:failure("asked for item " .. id .. ", got item " .. tostring(item.id))
  elseif item.price <= 0 then
    response:failure("an item without a price")
  else
    response:success()
  end
end, { name = "view_item" })

Checker:task(function(self)
  -- The demo answers 404 for items past its catalogue: a failure, counted under one name.
  self.client:get("/items/100000", { name = "/items/[missing]" })
end, { name = "missing_item" })
