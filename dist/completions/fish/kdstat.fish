complete -c kdstat -l watch -d 'Print the status every SECONDS (default 2) until Ctrl-C: in place on a terminal, one after the other otherwise' -r -f
complete -c kdstat -l key -d 'Queue key, hex (0x6b65726e) or decimal' -r -f
complete -c kdstat -l timeout -d 'Seconds to wait for the answer (0: forever)' -r -f
complete -c kdstat -l json -d 'Print the status as one JSON document (fields below, in --help); with --watch, one per line; with `why MODULE`, its answer'
complete -c kdstat -l prometheus -d 'Print the status in the Prometheus text format (series in kdstat(8)), e.g. for node_exporter\'s textfile collector'
complete -c kdstat -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kdstat -s V -l version -d 'Print version'
complete -c kdstat -f -a 'status debug nodebug keep nokeep delay= flush policy mode=enforce mode=audit allow deny why'
