from keras_captioning.cli import main

raise SystemExit(main())
