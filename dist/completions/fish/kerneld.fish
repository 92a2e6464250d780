complete -c kerneld -l delay -d 'Seconds between sweeps for idle modules, and the delay of a delayed release, 1 to 604800 (also `delay=N`; default 60)' -r -f
complete -c kerneld -l type -d 'Serve only this message type, 1 to 1023 (256: arp); negative N serves every type up to |N|, at most 255 (also `type=N`; default -255)' -r -f
complete -c kerneld -l key -d 'Queue key, hex (0x6b65726e) or decimal' -r -f
complete -c kerneld -l config -d 'Configuration file' -r -F
complete -c kerneld -l shim -d 'The shim to register (default: kerneld-modprobe beside this program)' -r -F
complete -c kerneld -l module-dir -d 'Module directory, as modprobe -d ROOT -S VERSION gives ROOT/lib/modules/VERSION (default /lib/modules/$(uname -r))' -r -f -a "(__fish_complete_directories)"
complete -c kerneld -l modprobe-d -d 'modprobe.d directory to read instead of the standard ones (repeatable)' -r -f -a "(__fish_complete_directories)"
complete -c kerneld -l state-dir -d 'Where the record of loaded modules is kept (default /run/kerneld, made mode 0700); one owned by another user, or that group or others may write, is refused (exit status 3)' -r -f -a "(__fish_complete_directories)"
complete -c kerneld -l debug -d 'Log every message received (also `debug`)'
complete -c kerneld -l keep -d 'Never unload idle modules (also `keep`)'
complete -c kerneld -s f -l foreground -d 'Stay attached to the terminal (for service managers); logs go to stderr too'
complete -c kerneld -l register -d 'Register kerneld-modprobe as the kernel\'s module helper at start and restore the previous helper at a clean stop'
complete -c kerneld -l check-config -d 'Check the configuration file and exit (0 if valid)'
complete -c kerneld -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kerneld -s V -l version -d 'Print version'
