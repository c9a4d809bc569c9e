-- Members log in on start (a session cookie), check their account page, browse, and log out on stop.
--   cicada -f examples/lua/login_flow.lua --headless -u 10 -t 20s
local Member = cicada.user { name = "Member", wait_time = cicada.between(0.2, 0.8) }

function Member:on_start()
  self.name = "member" .. self.id
  self.client:post("/login", { form = { username = self.name, password = "secret" } })
  if self.client:cookie("session") == nil then error("login did not set a session cookie") end
end

function Member:on_stop()
  self.client:post("/logout")
end

Member:task(2, function(self)
  local response = self.client:get("/account", { catch_response = true })
  local ok, body = pcall(response.json, response)
  if not ok then
    response:failure("the account page is not JSON")
  elseif body.user ~= self.name then
    response:failure("logged in as " .. tostring(body.user) .. " instead of " .. self.name)
  else
    response:success()
  end
end, { name = "account" })

Member:task(function(self) self.client:get("/items") end, { name = "browse" })
