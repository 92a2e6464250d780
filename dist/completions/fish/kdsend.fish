complete -c kdsend -l key -d 'Queue key, hex (0x6b65726e) or decimal' -r -f
complete -c kdsend -l timeout -d 'Seconds to wait for the reply with -r (0: forever)' -r -f
complete -c kdsend -s r -l reply -d 'Wait for the reply and print its status and text'
complete -c kdsend -s e -l exit-status -d 'As -r, and exit 1 when the reply\'s status is not 0 (as modprobe)'
complete -c kdsend -l old-header -d 'Send the 1995 header (type, id, text) without version and pid'
complete -c kdsend -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kdsend -s V -l version -d 'Print version'
