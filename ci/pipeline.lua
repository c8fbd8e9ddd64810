-- wrk script: send requests pipelined `depth` deep (default 1), as TechEmpower's plaintext
-- test does with depth 16. Usage: wrk -s ci/pipeline.lua URL -- 16
init = function(args)
  local r = {}
  local depth = tonumber(args[1]) or 1
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
