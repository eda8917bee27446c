-- wrk script for bench/soak.sh: cycles through the site's routes, 20 steps
-- a turn: static 13 B (8), WSGI GET (6), WSGI POST of 1 KiB echoed (5),
-- CGI (1). A POST answered with other bytes than it sent is counted and
-- printed as "Bad echoes: N" (bench/soak.sh adds them to the failures).
local body = string.rep("0123456789abcdef", 64)
local steps = {}
-- Built per thread in init(): at load time wrk has no Host header yet.
init = function(args)
  for _ = 1, 8 do table.insert(steps, wrk.format("GET", "/hello.txt")) end
  for _ = 1, 6 do table.insert(steps, wrk.format("GET", "/app/")) end
  for _ = 1, 5 do
    table.insert(steps, wrk.format("POST", "/app/echo",
      { ["Content-Type"] = "application/octet-stream" }, body))
  end
  table.insert(steps, wrk.format("GET", "/cgi-bin/hello.sh"))
end
local i = 0

request = function()
  i = i % #steps + 1
  return steps[i]
end

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

bad_echoes = 0
response = function(status, headers, answer)
  -- Only the POSTs are answered with 1024 bytes: their echo must match.
  if status == 200 and #answer == 1024 and answer ~= body then
    bad_echoes = bad_echoes + 1
  end
end

done = function(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("bad_echoes") end
  io.write(string.format("Bad echoes: %d\n", bad))
end
