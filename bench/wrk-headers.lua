-- wrk script for bench/run.sh: adds the headers of the file named by $WRK_HEADERS
-- ("Name: value", one a line, the curl header files run.sh writes), so that no key is
-- on wrk's command line. It only sets headers: the request stays static, built once,
-- and costs what it costs without a script.
local path = os.getenv("WRK_HEADERS")
if path and path ~= "" then
   local f = assert(io.open(path, "r"))
   for line in f:lines() do
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then
         wrk.headers[name] = value
      end
   end
   f:close()
end
