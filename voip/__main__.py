from voip.cli import main

raise SystemExit(main())
