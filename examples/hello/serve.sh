#!/bin/sh
# Writes the page, then serves it with busybox httpd in the foreground.
set -eu
mkdir -p /tmp/www/cgi-bin
cat > /tmp/www/cgi-bin/index.cgi <<CGI
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
printf '%s from %s\n' "\${GREETING:-hello}" "\$(cat /proc/sys/kernel/hostname)"
CGI
chmod 0755 /tmp/www/cgi-bin/index.cgi
printf '<meta http-equiv="refresh" content="0; url=/cgi-bin/index.cgi">\n' > /tmp/www/index.html
echo "serving on :8080"
exec busybox httpd -f -v -p 8080 -h /tmp/www
