from nemolaunch.cli import main

main()
